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

import json
import sys
from pathlib import Path

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


def _plain(record: dict) -> dict:
    return json.loads(json.dumps(record))  # tuples as lists, as a JSON file holds them


def differing_fields(first: dict, second: dict) -> list[str]:
    """Identity fields that differ, other than the incidental ones (the checkpoint's file name, open_clip's version)."""
    first, second = _plain(first), _plain(second)
    return sorted(key for key in first.keys() | second.keys()
                  if key not in _INCIDENTAL and first.get(key) != second.get(key))


def same_teacher(first: dict, second: dict) -> bool:
    """Whether two identity records give the same embeddings."""
    return not differing_fields(first, second)


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
