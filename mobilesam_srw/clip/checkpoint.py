"""The trained CLIP student file: what rebuilds a student, and loading one from a run.

Run checkpoints (atomic, ``weights_only`` loadable, with RNG states) are the engine's
(:mod:`mobilesam_srw.engine.checkpoint`); a run's ``student.pt`` holds :func:`student_record`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mobilesam_srw.clip.student import build_clip_student
from mobilesam_srw.clip.teacher_record import check_fields, check_identity_record
from mobilesam_srw.engine.checkpoint import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    STUDENT_FILE,
    load,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.weights import load_weights

STUDENT_KIND = "srw-clip student"


def student_record(module: nn.Module, student: str, embed_dim: int, image_size: list[int], teacher: dict,
                   teacher_checkpoint: str | None, **extra) -> dict:
    """What identifies a trained student: registry name, embedding size, input size, teacher, weights.

    Args:
        module: the student (open_clip ``TimmModel``).
        student: its registry name or ``timm:<name>``.
        embed_dim: the teacher's embedding size ``D``.
        image_size: the teacher's input ``[H, W]``.
        teacher: the teacher's identity (``TeacherIdentity.as_dict()``).
        teacher_checkpoint: where precompute read the teacher (a hint for later stages).
        extra: other JSON-able facts (loss, ...).
    """
    return {"kind": STUDENT_KIND, "student": student, "embed_dim": embed_dim, "image_size": list(image_size),
            "teacher": teacher, "teacher_checkpoint": teacher_checkpoint, "model": module.state_dict(), **extra}


def _check_record(record: dict, path: Path) -> None:
    """A one-line SrwError naming ``path`` unless the record's fields are what rebuilding needs
    (``embed_dim`` and ``image_size`` checked as in the teacher's record)."""
    check_fields(record, f"{path}: its record's", ("student", "embed_dim", "image_size", "teacher_checkpoint"),
                 extra={"student": (lambda v: isinstance(v, str), "a model name"),
                        "teacher_checkpoint": (lambda v: v is None or isinstance(v, str), "a path or null")},
                 show=repr)
    check_identity_record(record.get("teacher"), str(path))


def load_clip_student(path: Path) -> tuple[nn.Module, dict]:
    """A student (eval mode) and its record, from a run folder (its ``student.pt``, else its last
    checkpoint) or a file. A file that is not a well-formed srw-clip student (its fields, its weights'
    keys and shapes, finite weights) is one line naming it."""
    path = Path(path)
    if path.is_dir():
        final = path / STUDENT_FILE
        path = final if final.is_file() else path / CHECKPOINT_DIR / LAST_CHECKPOINT
    record = load(path)
    if record.get("kind") != STUDENT_KIND or "model" not in record:
        raise SrwError(f"{path} is not a student file or training checkpoint of srw-clip")
    _check_record(record, path)
    student = build_clip_student(record["student"], record["embed_dim"], tuple(record["image_size"]))
    load_weights(student, record["model"], str(path))
    return student.eval(), record
