"""``srw-clip precompute``: img2dataset tars -> the pixels an open_clip teacher saw and its image embeddings.

The teacher runs once here (ten epochs would otherwise run it ten times). The source is
:mod:`~mobilesam_srw.data_prep.clip.img2dataset` (tars are the units a ``--subset`` chooses), the plan,
writer and the rank/resume loop are the shared ones (:mod:`~mobilesam_srw.data_prep.plan`,
:mod:`~mobilesam_srw.data_prep.writer`, :mod:`~mobilesam_srw.data_prep.shard_encoding`); this module
adds CLIP's preparation (open_clip's preprocessing before normalisation, then the stored image's
encode-decode round trip), its teacher hook and its run identity. The format is
:mod:`mobilesam_srw.clip.shards`.

Shard ``i`` is the valid samples of plan chunk ``i``; under torchrun rank ``r`` writes the shards with
``i % world_size == r`` and rank 0 merges ``manifest.json``. A rerun with the same arguments skips
complete shards; a folder of another teacher, dtype, image format or input is refused.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilesam_srw import shards
from mobilesam_srw.atomic import read_json, remove_leftovers, write_json
from mobilesam_srw.clip import shards as clip_shards
from mobilesam_srw.clip.teacher import (
    ClipTeacher,
    PixelTransform,
    build_clip_teacher,
    save_teacher_checkpoint,
)
from mobilesam_srw.clip.teacher_record import RANDOM_TEACHER_FILE, differing_fields
from mobilesam_srw.data_prep import shard_encoding, writer
from mobilesam_srw.data_prep.clip import img2dataset
from mobilesam_srw.data_prep.plan import Plan, make_plan
from mobilesam_srw.data_prep.sample_pipeline import PlannedSamples
from mobilesam_srw.data_prep.sources import (
    BadSample,
    ImageLimits,
    SampleRef,
    SourceOptions,
)
from mobilesam_srw.data_prep.subset import parse_subset
from mobilesam_srw.distributed import DistributedContext, distributed_context
from mobilesam_srw.engine.config import default_workers
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.options import check_options, option
from mobilesam_srw.threads import cpu_threads, threads_beside

DEFAULT_TEACHER = "ViT-B-32"
# run-record fields a rerun may not change (the teacher's checkpoint path may: its sha256 is in "teacher")
_RUN_FIELDS = ("format", "format_version", "image_size", "embedding_shape", "embedding_dtype", "image_format",
               "jpeg_quality", "samples_per_shard", "input", "subset", "seed", "limit", "image_limits",
               "plan_fingerprint")


@dataclass(kw_only=True)
class ClipPrecomputeConfig:
    """``srw-clip precompute``: what to encode, with which teacher, into which folder."""

    img2dataset: list[str] = option(help="img2dataset output: tars, folders of tars, or globs (quote them)")
    out: Path = option(help="output folder of shards and manifest.json")
    teacher: str = option(DEFAULT_TEACHER, help="open_clip model name (the paper: CLIP ViT-B)")
    checkpoint: Path | None = option(None, help="the teacher's local open_clip checkpoint (.safetensors, .bin, .pt "
                                                "state dict); nothing is downloaded")
    pretrained_tag: str | None = option(None, help="open_clip tag the checkpoint was released under (e.g. openai: "
                                                   "its QuickGELU and preprocessing)")
    random_teacher: bool = option(False, help="a RANDOM teacher saved beside the shards (tests and demos only)")
    subset: str = option("all", help="fraction of the tars (e.g. 10%%, whole tars chosen with --seed), all, or a "
                                     "file listing tar names")
    seed: int = option(0, help="seeds the subset choice and a random teacher")
    limit: int | None = option(None, help="encode at most N samples", minimum=1)
    shard_size: int = option(1024, help="samples per output shard", minimum=1)
    batch_size: int = option(64, help="images per teacher forward pass", minimum=1)
    dtype: str = option("fp16", choices=clip_shards.EMBEDDING_DTYPES, help="embedding storage")
    image_format: str = option("png", choices=shards.IMAGE_FORMAT_CHOICES,
                               help="stored pixels: png (lossless, ~75 KiB at 224 px) or jpeg (jpg; --jpeg-quality, "
                                    "~20 KiB at 90; the teacher embeds the decoded JPEG)")
    jpeg_quality: int = option(shards.JPEG_QUALITY, minimum=1, help="JPEG quality 1-100 of --image-format jpeg")
    device: str = option("auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    workers: int = option(factory=default_workers, help="image decoding processes (default min(4, cores))",
                          minimum=0)
    max_file_mb: float = option(ImageLimits.max_file_bytes / 2**20, help="skip larger image files (MiB)", above=0)
    max_image_pixels: int = option(ImageLimits.max_pixels, help="skip images of more pixels (width x height)",
                                   minimum=1)
    progress: bool = option(True, help="no progress bar", flag="--no-progress")

    def __post_init__(self) -> None:
        self.image_format = shards.image_format_name(self.image_format)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_file_bytes=int(self.max_file_mb * 2**20), max_pixels=self.max_image_pixels)

    def check(self) -> None:
        check_options(self)
        if not 1 <= self.jpeg_quality <= 100:
            raise SrwError(f"--jpeg-quality must be in 1-100, got {self.jpeg_quality}")
        if self.random_teacher and self.checkpoint is not None:
            raise SrwError("--random-teacher and --checkpoint exclude each other")
        if not self.random_teacher and self.checkpoint is None:
            raise SrwError("--checkpoint is required (a local open_clip checkpoint; nothing is downloaded), or "
                           "--random-teacher for a pipeline test")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise SrwError(f"checkpoint not found: {self.checkpoint}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SrwError(f"--out {self.out} exists and is not a folder")


class PreparedImageText(PlannedSamples):
    """Planned ``(shard, ref)`` -> the stored image, its decoded pixels, caption and record; or a skip.

    Args:
        items: :func:`~mobilesam_srw.data_prep.shard_encoding.planned_items`.
        pixels: the teacher's :class:`~mobilesam_srw.clip.teacher.PixelTransform` (open_clip's resize,
            crop and RGB conversion).
        image_format: ``png`` or ``jpg``.
        limits: file size and pixel limits; the pixel limit also bounds the image the teacher's resize
            makes (a 1 x 20000 px strip would become 224 x 4.5M px before its centre crop).
        image_size: the teacher's input ``(H, W)``.
    """

    def __init__(self, items: list[tuple[int, SampleRef]], pixels: PixelTransform, image_format: str,
                 limits: ImageLimits, image_size: tuple[int, int], jpeg_quality: int = shards.JPEG_QUALITY) -> None:
        super().__init__(items, limits)
        self.pixels, self.image_format, self.image_size = pixels, image_format, image_size
        self.jpeg_quality = jpeg_quality

    def prepare(self, ref: SampleRef, sample) -> dict:
        width, height = sample.image.size
        resized = max(self.image_size) ** 2 * max(width, height) // min(width, height)  # short side to the input
        if resized > self.limits.max_pixels:
            raise BadSample(f"aspect ratio: {width}x{height} px would be resized to {resized} pixels > "
                            f"{self.limits.max_pixels}")
        image, pixels = clip_shards.stored_pixels(self.pixels(sample.image), self.image_format, self.jpeg_quality)
        meta = {"key": ref.key, "source": ref.source, "original_size": [height, width], "record": sample.record}
        return {"image": image, "pixels": pixels, "caption": sample.caption, "meta": meta}


def teacher_hook(teacher: ClipTeacher, image_format: str, dtype: str) -> shard_encoding.EncodeBatch:
    """The teacher's part of the loop: embed the decoded stored pixels, make the shard samples. A NaN or
    inf embedding is the teacher's fault (the pixels are 8-bit), so it stops the run with one line."""

    def encode_batch(items: list[dict]) -> list[dict]:
        embeddings = teacher.encode(np.stack([item["pixels"] for item in items])).cpu().numpy()
        if bad := [item["key"] for item, row in zip(items, embeddings) if not np.isfinite(row).all()]:
            raise SrwError(f"the teacher {teacher.identity.name} gave NaN or inf embeddings for {len(bad)} of "
                           f"{len(items)} samples ({', '.join(bad[:3])}); are its weights sound?")
        return [clip_shards.encode_sample(item["key"], item["image"], image_format, embedding, item["caption"],
                                          item["meta"], dtype)
                for item, embedding in zip(items, embeddings)]

    return encode_batch


def settings_record(config: ClipPrecomputeConfig, plan: Plan) -> dict:
    """The run record's fields that do not depend on the teacher."""
    return {
        "format": clip_shards.FORMAT,
        "format_version": clip_shards.FORMAT_VERSION,
        "embedding_dtype": config.dtype,
        "image_format": config.image_format,
        "jpeg_quality": config.jpeg_quality if config.image_format == "jpg" else None,
        "samples_per_shard": config.shard_size,
        "input": {"kind": "img2dataset"},
        "subset": config.subset,
        "seed": config.seed,
        "limit": config.limit,
        "image_limits": {"max_file_bytes": config.limits.max_file_bytes, "max_pixels": config.limits.max_pixels},
        "sources": plan.sources,
        "plan_fingerprint": plan.fingerprint(),
    }


def run_record(config: ClipPrecomputeConfig, teacher: ClipTeacher, checkpoint: Path, plan: Plan) -> dict:
    """``precompute.json``: the run's identity (the manifest starts with it)."""
    identity = teacher.identity
    return {
        **settings_record(config, plan),
        "teacher": identity.as_dict(),
        "teacher_checkpoint": str(Path(checkpoint).resolve()),
        "image_size": list(identity.image_size),
        "embedding_dim": identity.embed_dim,
        "embedding_shape": [identity.embed_dim],
    }


def _previous_run(out: Path) -> dict | None:
    """The run record of an earlier precompute into ``out``; a folder of anything else is refused."""
    run_file = out / writer.RUN_FILE
    if not run_file.is_file():
        if any(out.glob("shard-*.tar")):
            raise SrwError(f"{out} holds shards not written by this precompute; choose an empty --out")
        return None
    try:
        previous = read_json(run_file)
    except (OSError, ValueError, RecursionError) as error:
        raise SrwError(f"{run_file}: unreadable run record ({type(error).__name__}); choose another --out") from None
    if not isinstance(previous, dict) or previous.get("format") != clip_shards.FORMAT:
        raise SrwError(f"{out} holds another kind of precompute output (srw-sam?); choose another --out")
    return previous


def check_output_folder(out: Path, run: dict) -> None:
    """Refuse a folder holding shards of another teacher, format, dtype, input or plan.

    ``run`` is the new run record, or only its :func:`settings_record` (checked before the teacher is built).
    """
    previous = _previous_run(out)
    if previous is None:
        return
    if "teacher" in run and (differing := differing_fields(previous["teacher"], run["teacher"])):
        raise SrwError(f"{out} holds embeddings of another teacher ({', '.join(differing)} differ); "
                       "choose another --out")
    if changed := [name for name in _RUN_FIELDS if name in run and previous.get(name) != run[name]]:
        raise SrwError(f"{out} was started with other settings ({', '.join(changed)}); rerun with the same "
                       "arguments or choose a new --out")


def _teacher_before_lock(config: ClipPrecomputeConfig) -> ClipTeacher:
    """The teacher, built before the output folder is touched, so a bad name, tag or file is one line and
    no folder: from ``--checkpoint``, from the random teacher an earlier run saved beside the shards, or a
    new random one (in memory; :func:`_teacher_file` saves it)."""
    saved = config.out / RANDOM_TEACHER_FILE
    if config.checkpoint is not None or saved.is_file():
        return build_clip_teacher(config.teacher, config.checkpoint or saved, config.pretrained_tag)
    return build_clip_teacher(config.teacher, None, config.pretrained_tag, seed=config.seed)


def _teacher_file(config: ClipPrecomputeConfig, teacher: ClipTeacher) -> tuple[ClipTeacher, Path]:
    """The teacher and its file (under the folder's lock): ``--checkpoint``, or the random teacher saved
    beside the shards (saved now and rebuilt from the file, which gives it a sha256, on first use)."""
    if config.checkpoint is not None:
        return teacher, Path(config.checkpoint)
    path = config.out / RANDOM_TEACHER_FILE
    if teacher.identity.checkpoint_sha256 is None:
        save_teacher_checkpoint(teacher, path)
        teacher = build_clip_teacher(config.teacher, path, config.pretrained_tag)
    return teacher, path


def _setup(config: ClipPrecomputeConfig, ctx: DistributedContext, plan: Plan,
           locks: contextlib.ExitStack) -> tuple[ClipTeacher, dict]:
    """Rank 0 builds the teacher and checks the folder, then locks it, removes what a killed run left and
    records the run (nothing is written on a bad input or into a foreign folder); then every rank holds
    the same teacher and run record. The lock is held until ``locks`` closes."""
    error, teacher = None, None
    if ctx.is_main:
        try:
            check_output_folder(config.out, settings_record(config, plan))  # before the teacher: fail fast
            teacher = _teacher_before_lock(config)
            check_output_folder(config.out, {"teacher": teacher.identity.as_dict()})  # before anything is saved
            locks.enter_context(output_lock(config.out))  # creates the folder; one writer per folder
            for folder in (config.out, config.out / writer.PARTS_DIR):
                remove_leftovers(folder)  # temporary files of a killed run
            teacher, checkpoint = _teacher_file(config, teacher)
            run = run_record(config, teacher, checkpoint, plan)
            check_output_folder(config.out, run)  # under the lock: the folder as it is now
            write_json(config.out / writer.RUN_FILE, run)  # a resume may record the checkpoint's new path
        except SrwError as failure:
            error = str(failure)
    ctx.agree(error)
    ctx.barrier()
    run = read_json(config.out / writer.RUN_FILE)
    if teacher is None:
        teacher = build_clip_teacher(config.teacher, Path(run["teacher_checkpoint"]), config.pretrained_tag)
    teacher.model.to(ctx.device)
    return teacher, run


def _loud_random_note(teacher: ClipTeacher) -> None:
    if teacher.identity.is_random:
        print(f"precompute: the teacher is {teacher.identity.describe()}: its embeddings mean nothing",
              file=sys.stderr)


def run_clip_precompute(config: ClipPrecomputeConfig) -> dict:
    """Run (or resume) a CLIP precompute; returns the manifest of ``config.out`` (every rank gets it)."""
    config.check()
    config.out = Path(config.out)
    if any(tar.parent.resolve() == config.out.resolve() for tar in img2dataset.discover_tars(config.img2dataset)):
        raise SrwError(f"--out {config.out} holds input tars: write the shards into a folder of their own")
    discovery = img2dataset.discover(config.img2dataset, SourceOptions(limits=config.limits))
    plan = make_plan(discovery, parse_subset(config.subset), config.seed, config.shard_size, config.limit)
    with distributed_context(config.device) as ctx, contextlib.ExitStack() as locks, \
            cpu_threads(threads_beside(config.workers)):  # the teacher leaves the loader workers their cores
        teacher, run = _setup(config, ctx, plan, locks)
        if ctx.is_main:
            _loud_random_note(teacher)
            for skip in plan.skipped:
                shard_encoding.warn(f"skipped {skip.key or '(tar)'} ({skip.source}): {skip.reason}")
        started = time.perf_counter()
        pending = shard_encoding.pending_shards(config.out, plan, ctx)
        prepared = PreparedImageText(shard_encoding.planned_items(plan, pending), teacher.pixels,
                                     config.image_format, config.limits, teacher.identity.image_size,
                                     config.jpeg_quality)
        written = shard_encoding.encode_shards(
            config.out, plan, pending, prepared, teacher_hook(teacher, config.image_format, config.dtype),
            run["plan_fingerprint"], config.batch_size, config.workers, config.progress and ctx.is_main,
            "precompute" + (f"[{ctx.rank}]" if ctx.is_distributed else ""))
        manifest = shard_encoding.finish(config.out, run, plan, ctx)
        if ctx.is_main:
            seconds = time.perf_counter() - started
            print(f"precompute: {manifest['samples_written']} samples in {len(manifest['shards'])} shards "
                  f"({manifest['bytes'] / 2**20:.1f} MiB), {manifest['samples_skipped']} skipped; this run encoded "
                  f"{written} in {seconds:.1f} s; manifest: {config.out / shards.MANIFEST_NAME}", file=sys.stderr)
        return manifest
