"""``srw-sam precompute``: SA-1B images -> teacher embeddings + per-patch avesim, in shards.

The teacher runs once here; training never touches it. Images are read, validated and
resized in DataLoader workers while the teacher encodes on the device. Shard ``i`` is
the valid samples of plan chunk ``i``; under torchrun, rank ``r`` writes the shards
with ``i % world_size == r``. A rerun with the same arguments skips complete shards.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.atomic import read_json, write_json
from mobilesam_srw.data_prep import writer
from mobilesam_srw.data_prep.plan import Plan, make_plan
from mobilesam_srw.data_prep.run_identity import check_output_folder, run_record, teacher_identity
from mobilesam_srw.data_prep.sa1b import BadSample, SampleRef, load_sample
from mobilesam_srw.data_prep.subset import parse_subset
from mobilesam_srw.distributed import DistributedContext, distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import teacher as sam_teacher
from mobilesam_srw.srw import average_similarity


@dataclass
class PrecomputeConfig:
    """Arguments of a precompute run (the CLI's options).

    Args:
        inputs: SA-1B tars, folders and globs.
        out: output folder of shards.
        teacher: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny`` (random, for demos and tests).
        checkpoint: the SAM checkpoint (for ``tiny``: optional, a teacher file to reuse).
        subset: ``"1%"`` (MobileSAM's share of SA-1B), ``"all"``, or a file of names.
        seed: seeds the subset choice and the tiny teacher's initialisation.
        shard_size: planned samples per shard.
        batch_size: images per teacher forward pass.
        device: ``auto`` (this rank's GPU if any), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: embedding storage, ``fp16``, ``int8`` or ``fp32``.
        limit: keep only the first N planned samples.
        workers: DataLoader processes that decode and resize images.
        tiny_image_size: input size of a new tiny teacher.
        progress: show a progress bar.
    """

    inputs: list[str]
    out: Path
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
    progress: bool = True


class _PlannedImages(Dataset):
    """Plan samples -> resized image, its JPEG, and its record; or the reason it is skipped."""

    def __init__(self, items: list[tuple[int, SampleRef]], image_size: int) -> None:
        self.items = items
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        shard, ref = self.items[position]
        base = {"shard": shard, "key": ref.key, "source": ref.source}
        try:
            rgb, record = load_sample(ref)
        except BadSample as error:
            return {**base, "skip": str(error)}
        resized = sam_teacher.resize_longest_side(rgb, self.image_size)
        meta = {
            "key": ref.key,
            "source": ref.source,
            "original_size": list(rgb.shape[:2]),
            "input_size": list(resized.shape[:2]),
            "image": record["image"],
            "annotations": record["annotations"],
        }
        return {**base, "resized": resized, "jpeg": shards.encode_image(resized), "meta": meta}


def _warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


def _check_config(config: PrecomputeConfig) -> None:
    if config.teacher not in sam_teacher.SAM_CONFIGS:
        raise SrwError(f"unknown teacher type {config.teacher!r}; expected one of {', '.join(sam_teacher.SAM_CONFIGS)}")
    if config.dtype not in shards.EMBEDDING_DTYPES:
        raise SrwError(f"--dtype must be one of {', '.join(shards.EMBEDDING_DTYPES)}, got {config.dtype}")
    if config.teacher != "tiny" and config.checkpoint is None:
        raise SrwError(f"--checkpoint is required for teacher {config.teacher}")
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise SrwError(f"checkpoint not found: {config.checkpoint}")
    if config.batch_size < 1 or config.workers < 0:
        raise SrwError("--batch-size must be >= 1 and --workers >= 0")


def _agree(ctx: DistributedContext, error: str | None) -> None:
    """All ranks raise rank 0's setup error, so none waits forever at a barrier."""
    if ctx.is_distributed:
        shared = [error]
        torch.distributed.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error:
        raise SrwError(error)


def _prepare(config: PrecomputeConfig, ctx: DistributedContext) -> tuple[Plan, dict, "torch.nn.Module | None"]:
    """Validate everything, then (rank 0) create the folder; nothing is written on a bad input.

    Returns the plan, the run record, and (rank 0) the teacher it already loaded.
    """
    _check_config(config)
    plan = make_plan(config.inputs, parse_subset(config.subset), config.seed, config.shard_size, config.limit)
    error, sam = None, None
    if ctx.is_main:
        try:
            identity, sam = teacher_identity(config)
            run = run_record(config, identity, plan)
            check_output_folder(config.out, run)
            config.out.mkdir(parents=True, exist_ok=True)
            tiny_file = config.out / sam_teacher.TINY_TEACHER_FILE
            if config.teacher == "tiny" and not tiny_file.is_file():  # beside the shards, for resume and eval
                sam_teacher.save_tiny_teacher(sam, sam_teacher.sam_config_from_dict(identity["sam_config"]), tiny_file)
                if identity["checkpoint_sha256"] is None:  # a new teacher: this file is its identity
                    identity["checkpoint_sha256"] = sam_teacher.file_sha256(tiny_file)
            if not (config.out / writer.RUN_FILE).is_file():
                write_json(config.out / writer.RUN_FILE, run)
        except SrwError as failure:
            error = str(failure)
    _agree(ctx, error)
    ctx.barrier()
    return plan, read_json(config.out / writer.RUN_FILE), sam


def _load_teacher(config: PrecomputeConfig, run: dict):
    checkpoint = Path(config.checkpoint) if config.checkpoint else config.out / run["teacher"]["checkpoint"]
    return sam_teacher.load_sam(config.teacher, checkpoint)


def run_precompute(config: PrecomputeConfig) -> dict:
    """Run (or resume) a precompute; returns the manifest (every rank gets it)."""
    config.out = Path(config.out)
    with distributed_context(config.device) as ctx:
        plan, run, teacher = _prepare(config, ctx)
        if ctx.is_main:
            for skip in plan.skipped:
                _warn(f"skipped {skip.key or '(tar)'} ({skip.source}): {skip.reason}")
        pending = [
            index for index in range(ctx.rank, plan.num_shards, ctx.world_size)
            if not writer.is_complete(config.out, index)
        ]
        started = time.perf_counter()
        written = 0
        if pending:
            teacher = (teacher or _load_teacher(config, run)).to(ctx.device)
            written = _encode_shards(config, ctx, plan, run, teacher, pending)
        ctx.barrier()
        if ctx.is_main:
            manifest = writer.merge_manifest(config.out, run, plan.num_shards, [s.as_dict() for s in plan.skipped])
            seconds = time.perf_counter() - started
            print(
                f"precompute: {manifest['samples_written']} samples in {len(manifest['shards'])} shards "
                f"({manifest['bytes'] / 2**20:.1f} MiB), {manifest['samples_skipped']} skipped; this run encoded "
                f"{written} in {seconds:.1f} s ({written / max(seconds, 1e-9):.2f} img/s); "
                f"manifest: {config.out / shards.MANIFEST_NAME}",
                file=sys.stderr,
            )
        ctx.barrier()
        return shards.read_manifest(config.out)


def _encode_shards(
    config: PrecomputeConfig, ctx: DistributedContext, plan: Plan, run: dict, teacher, pending: list[int]
) -> int:
    """Encode the pending shards of this rank, writing each as soon as its last sample is done."""
    items = [(index, ref) for index in pending for ref in plan.shard_samples(index)]
    loader = DataLoader(
        _PlannedImages(items, run["input_size"]),
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=list,
        pin_memory=False,
    )
    expected = {index: len(plan.shard_samples(index)) for index in pending}
    done = {index: 0 for index in pending}
    encoded: dict[int, list[dict]] = {index: [] for index in pending}
    skipped: dict[int, list[dict]] = {index: [] for index in pending}
    written = 0
    bar = tqdm(total=len(items), unit="img", desc=f"precompute[{ctx.rank}]", disable=not config.progress or not ctx.is_main)
    for batch in loader:
        valid = [item for item in batch if "skip" not in item]
        if valid:
            embeddings = sam_teacher.image_embeddings(teacher, [item["resized"] for item in valid])
            avesim = average_similarity(embeddings.flatten(2).transpose(1, 2)).view(
                embeddings.shape[0], *embeddings.shape[2:]
            )
            for item, embedding, similarity in zip(valid, embeddings.cpu().numpy(), avesim.cpu().numpy()):
                encoded[item["shard"]].append(
                    shards.encode_sample(item["key"], item["jpeg"], embedding, similarity, item["meta"], config.dtype)
                )
        for item in batch:
            if "skip" in item:
                _warn(f"skipped {item['key']} ({item['source']}): {item['skip']}")
                skipped[item["shard"]].append({"key": item["key"], "source": item["source"], "reason": item["skip"]})
            done[item["shard"]] += 1
            if done[item["shard"]] == expected[item["shard"]]:
                index = item["shard"]
                writer.write_shard(config.out, index, encoded.pop(index), skipped.pop(index), run["plan_fingerprint"])
        written += len(valid)
        bar.update(len(batch))
    bar.close()
    return written
