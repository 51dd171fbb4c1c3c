"""Finding the teacher a CLIP shard folder or run names, and rebuilding it exactly.

Shards, runs and exports record the teacher's identity (``TeacherIdentity.as_dict()``: open_clip name,
checkpoint sha256, tag, preprocessing) and the path of the checkpoint precompute read. A later stage
(``train --online``, ``eval``, ``export``) rebuilds the teacher from ``--teacher-checkpoint`` or, by
default, from that recorded path; either way the file's sha256 must be the recorded one (the build
hashes the file once).

A random teacher (``srw-clip precompute --random-teacher``, for demos and tests) is saved beside the
shards as :data:`RANDOM_TEACHER_FILE`, so it is rebuilt like any other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from mobilesam_srw.clip.teacher import ClipTeacher, TeacherIdentity, build_clip_teacher
from mobilesam_srw.errors import SrwError

RANDOM_TEACHER_FILE = "teacher_random.safetensors"
# identity fields that may differ between two builds of the same teacher
_INCIDENTAL = ("checkpoint", "open_clip_version")


def identity_from_dict(record: dict) -> TeacherIdentity:
    """A :class:`TeacherIdentity` from its ``as_dict()`` (JSON turns tuples into lists)."""
    values = dict(record)
    for name in ("image_size", "mean", "std"):
        values[name] = tuple(values[name])
    return TeacherIdentity(**values)


def _integer(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _optional_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _numbers(value: Any, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


# What every later stage relies on in a teacher record (manifest, student file): each TeacherIdentity field.
_IDENTITY_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "checkpoint": (_optional_text, "a file name or null"),
    "checkpoint_sha256": (lambda v: v is None or (isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None),
                          "a sha256 or null"),
    "random_seed": (lambda v: v is None or _integer(v, -(2**63)), "an integer or null"),
    "pretrained_tag": (_optional_text, "a tag or null"),
    "image_size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_integer(n, 1) for n in v),
                   "[h, w] of positive integers"),
    "embed_dim": (lambda v: _integer(v, 1), "a positive integer"),
    "mean": (lambda v: _numbers(v, 3), "3 finite numbers"),
    "std": (lambda v: _numbers(v, 3) and min(v) > 0, "3 positive finite numbers"),
    "interpolation": (lambda v: isinstance(v, str), "a name"),
    "resize_mode": (lambda v: isinstance(v, str), "a name"),
    "fill_color": (lambda v: _integer(v, 0), "an integer >= 0"),
    "quick_gelu": (lambda v: isinstance(v, bool), "true or false"),
    "open_clip_version": (lambda v: isinstance(v, str), "a version"),
}


def check_identity_record(record: Any, where: str) -> dict:
    """``record`` if it is a well-formed ``TeacherIdentity.as_dict()``; else a one-line :class:`SrwError`
    naming ``where`` (the manifest or student file it came from) and the first bad field."""
    if not isinstance(record, dict):
        raise SrwError(f"{where}: the teacher record is {type(record).__name__}, not an object")
    fields = [field.name for field in dataclasses.fields(TeacherIdentity)]
    if missing := [name for name in fields if name not in record]:
        raise SrwError(f"{where}: the teacher record has no {', '.join(missing)}")
    if unknown := sorted(map(str, set(record) - set(fields))):
        raise SrwError(f"{where}: the teacher record has unknown fields {', '.join(unknown)}")
    check_fields(record, f"{where}: the teacher record's")
    return record


def check_fields(record: dict, prefix: str, names: tuple[str, ...] | None = None,
                 extra: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
                 show: Callable[[Any], str] = json.dumps) -> None:
    """A one-line :class:`SrwError` (``<prefix> <field> is <value>, not <expected>``) for the first of
    ``names`` (default: every identity field) whose value in ``record`` fails its check: the identity
    fields' checks, and ``extra`` for other fields."""
    checks = {**_IDENTITY_CHECKS, **(extra or {})}
    for name in names or tuple(_IDENTITY_CHECKS):
        valid, expected = checks[name]
        if not valid(record.get(name)):
            raise SrwError(f"{prefix} {name} is {show(record.get(name))[:80]}, not {expected}")


def _plain(record: dict) -> dict:
    return json.loads(json.dumps(record))  # tuples as lists, as a JSON file holds them


def differing_fields(first: dict, second: dict) -> list[str]:
    """Identity fields that differ, other than the incidental ones (the checkpoint's file name, open_clip's version)."""
    first, second = _plain(first), _plain(second)
    return sorted(key for key in first.keys() | second.keys()
                  if key not in _INCIDENTAL and first.get(key) != second.get(key))


def rebuild_teacher(identity: dict, checkpoint: Path | None, recorded: str | Path | None,
                    device: str | torch.device = "cpu") -> ClipTeacher:
    """The teacher of ``identity``, built from ``checkpoint`` (or the ``recorded`` path when not given).

    Args:
        identity: the recorded ``TeacherIdentity.as_dict()``.
        checkpoint: ``--teacher-checkpoint``, if given.
        recorded: the path precompute read the teacher from, if known.
        device: where the model goes.

    Raises:
        SrwError: no usable file, or a file of another sha256 or model.
    """
    described = identity_from_dict(identity).describe()
    if identity.get("checkpoint_sha256") is None:
        raise SrwError(f"the teacher {described} was never saved to a file; it cannot be rebuilt")
    path = Path(checkpoint) if checkpoint is not None else (Path(recorded) if recorded else None)
    if path is None or not path.is_file():
        where = f" (not found at the recorded {recorded})" if checkpoint is None and recorded else ""
        raise SrwError(f"pass --teacher-checkpoint: the teacher is {described}, file {identity['checkpoint']}{where}")
    teacher = build_clip_teacher(identity["name"], checkpoint=path, pretrained_tag=identity.get("pretrained_tag"),
                                 seed=identity.get("random_seed") or 0, device=device)
    built = teacher.identity.as_dict()  # its checkpoint_sha256 is the file's
    if built["checkpoint_sha256"] != identity["checkpoint_sha256"]:
        raise SrwError(f"{path} is not the teacher's checkpoint (sha256 {built['checkpoint_sha256'][:12]}..., "
                       f"recorded {identity['checkpoint_sha256'][:12]}...)")
    if differing := differing_fields(built, identity):
        raise SrwError(f"{path} builds another teacher than the recorded one ({', '.join(differing)} differ)")
    if built["open_clip_version"] != identity.get("open_clip_version"):
        print(f"warning: the teacher was recorded with open_clip {identity.get('open_clip_version')}, "
              f"rebuilt with {built['open_clip_version']}", file=sys.stderr)
    return teacher
