"""The identity of a precompute run (teacher, input size, dtype, input, plan, split) and the
output folder's fit.

A rerun may only add to a folder whose shards came from the same teacher checkpoint, input
size, preprocessing, embedding dtype, stored image format (and JPEG quality), input and plan; anything
else is refused before a byte is written.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mobilesam_srw import shards
from mobilesam_srw.atomic import read_json
from mobilesam_srw.data_prep import writer
from mobilesam_srw.data_prep.plan import Plan
from mobilesam_srw.data_prep.split import HeldOut
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.teachers import Teacher, load_teacher, sam_vit
from mobilesam_srw.sam.teachers.registry import LEGACY_PREPROCESSING
from mobilesam_srw.weights import file_sha256

if TYPE_CHECKING:
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig


def _tiny_teacher(sam_config: "sam_vit.SamConfig", sam, path: Path | None) -> Teacher:
    """A tiny teacher of ``sam_config`` (its file ``path``, or None before it is saved)."""
    spec = sam_vit.tiny_spec(sam_config)
    return Teacher(spec, sam.eval(), path, file_sha256(path) if path is not None else None)


def teacher_identity(config: "PrecomputeConfig") -> tuple[dict, Teacher]:
    """The teacher (loaded and checked, or a new tiny one) and its identity record.

    The record is :meth:`Teacher.record` (type, input size, embedding shape, preprocessing,
    checkpoint name and SHA-256); a tiny teacher's also holds its ``sam_config``. A new tiny
    teacher (seeded by ``config.seed``) has no file and no SHA-256 until it is saved beside the shards.
    """
    tiny_file = config.out / sam_vit.TINY_TEACHER_FILE
    if config.teacher != "tiny":
        teacher = load_teacher(config.teacher, config.checkpoint)  # checks type, size and SHA-256 before any work
        return teacher.record(), teacher
    if config.checkpoint is None and not tiny_file.is_file():
        torch.manual_seed(config.seed)
        sam_config = replace(sam_vit.SAM_CONFIGS["tiny"], image_size=config.tiny_image_size)
        teacher = _tiny_teacher(sam_config, sam_vit.build_sam(sam_config), None)
    else:
        path = Path(config.checkpoint) if config.checkpoint is not None else tiny_file
        if not path.is_file():
            raise SrwError(f"checkpoint not found: {path}")
        sam, sam_config = sam_vit.read_tiny_teacher(path)
        if config.checkpoint is None and sam_config.image_size != config.tiny_image_size:
            raise SrwError(
                f"{config.out} holds shards of teacher tiny at input size {sam_config.image_size}, "
                f"not tiny at {config.tiny_image_size}; choose another --out"
            )
        teacher = _tiny_teacher(sam_config, sam, path)
    return {**teacher.record(), "sam_config": asdict(sam_config)}, teacher


DTYPE_BYTES = {"fp16": 2, "fp32": 4, "int8": 1}


def target_maps_record(identity: dict, dtype: str) -> dict:
    """For a teacher with further target maps (SAM 2): each stored map's field, shape and dtype, and the bytes
    per sample of all targets (embedding and maps; int8 adds a float32 scale per position); nothing otherwise."""
    if not identity.get("target_maps"):
        return {}
    shapes = {"embedding": list(identity["embedding_shape"]), **identity["target_maps"]}
    fields = {"embedding": shards.EMBEDDING_FIELD,
              **{name: shards.map_fields(name)[0] for name in identity["target_maps"]}}

    def size(shape: list[int]) -> int:
        channels, height, width = shape
        return channels * height * width * DTYPE_BYTES[dtype] + (height * width * 4 if dtype == "int8" else 0)

    return {"target_maps": {name: {"field": fields[name], "shape": shape, "dtype": dtype}
                            for name, shape in shapes.items()},
            "target_bytes_per_sample": sum(size(shape) for shape in shapes.values())}


def run_record(
    config: "PrecomputeConfig", identity: dict, plan: Plan, input_identity: dict, split: str, held_out: HeldOut | None
) -> dict:
    """The run record of one output folder (``precompute.json``; the manifest starts with it).

    Args:
        config: the run's arguments.
        identity: the teacher's identity (:func:`teacher_identity`).
        plan: the samples this folder gets.
        input_identity: the input kind and what else identifies the input (a COCO file's sha256).
        split: ``all`` (no held-out split), ``train`` or ``val``.
        held_out: the held-out rule, when there is one.
    """
    return {
        "teacher": identity,
        "input_size": identity["input_size"],
        "embedding_shape": list(identity["embedding_shape"]),
        "embedding_dtype": config.dtype,
        **target_maps_record(identity, config.dtype),
        "image_format": config.image_format,
        "jpeg_quality": config.jpeg_quality if config.image_format == "jpg" else None,
        "samples_per_shard": config.shard_size,
        "input": input_identity,
        "subset": config.subset,
        "seed": config.seed,
        "limit": config.limit,
        "split": split,
        "held_out": held_out.record() if held_out else None,
        "image_limits": {"max_file_bytes": config.max_file_bytes, "max_pixels": config.max_image_pixels},
        "sources": plan.sources,
        "plan_fingerprint": plan.fingerprint(),
    }


def read_run_file(path: Path) -> dict:
    """A folder's ``precompute.json``; a malformed one is one :class:`SrwError` line naming it."""
    try:
        record = read_json(path)
    except (OSError, ValueError, RecursionError) as error:
        raise SrwError(f"{path}: unreadable run record ({type(error).__name__}); choose another --out") from None
    teacher = record.get("teacher") if isinstance(record, dict) else None
    if not isinstance(teacher, dict) or not {"type", "checkpoint", "checkpoint_sha256"} <= teacher.keys() \
            or "input_size" not in record:
        raise SrwError(f"{path}: not a precompute run record; choose another --out")
    return record


def check_output_folder(out: Path, run: dict) -> None:
    """Refuse a folder that holds shards of another teacher, input size, dtype or plan."""
    run_file = out / writer.RUN_FILE
    if not run_file.is_file():
        if any(out.glob("shard-*.tar")):
            raise SrwError(f"{out} holds shards not written by this precompute; choose an empty --out")
        return
    previous = read_run_file(run_file)
    was, now = previous["teacher"], run["teacher"]
    if (was["type"], previous["input_size"]) != (now["type"], run["input_size"]):
        raise SrwError(
            f"{out} holds shards of teacher {was['type']} at input size {previous['input_size']}, "
            f"not {now['type']} at {run['input_size']}; choose another --out"
        )
    if was.get("preprocessing", LEGACY_PREPROCESSING) != now["preprocessing"]:
        raise SrwError(f"{out} holds shards of {was['type']} with {was.get('preprocessing', LEGACY_PREPROCESSING)} "
                       f"preprocessing, not {now['preprocessing']}; choose another --out")
    if "image_format" not in previous:
        raise SrwError(f"{out} holds shards of an older precompute (JPEG images; embeddings of another input); "
                       "its shards still train and evaluate, but choose another --out to write new ones")
    if (previous["image_format"], previous.get("jpeg_quality")) != (run["image_format"], run["jpeg_quality"]):
        def described(record: dict) -> str:
            quality = record.get("jpeg_quality")
            return f"--image-format {record['image_format']}" + (f" --jpeg-quality {quality}" if quality else "")
        raise SrwError(f"{out} was started with {described(previous)}, not {described(run)}; rerun with the same "
                       "arguments or a new --out")
    held_out_label = "--val-fraction or --val-keys"
    for name, label in (
        ("embedding_dtype", "--dtype"),
        ("input", "input (kind or COCO file)"),
        ("split", held_out_label),
        ("held_out", held_out_label),
        ("plan_fingerprint", f"input, --subset, --limit, --shard-size, {held_out_label}"),
    ):
        if previous.get(name) != run[name]:
            raise SrwError(f"{out} was started with another {label}; rerun with the same arguments or a new --out")
    if was["checkpoint_sha256"] != now["checkpoint_sha256"] and now["checkpoint_sha256"] is not None:
        raise SrwError(f"{out} holds embeddings of another {was['type']} checkpoint; choose another --out")
