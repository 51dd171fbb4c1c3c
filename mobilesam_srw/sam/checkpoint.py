"""The trained SAM student file: what identifies a student, and loading one from a run.

Run checkpoints (atomic, ``weights_only`` loadable, with RNG states) are the engine's:
:mod:`mobilesam_srw.engine.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from mobilesam_srw.engine.checkpoint import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    STUDENT_FILE,
    load,
    save,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.student import SamStudent, build_student
from mobilesam_srw.sam.transforms import PATCH_SIZE

__all__ = ["CHECKPOINT_DIR", "LAST_CHECKPOINT", "STUDENT_FILE", "load", "load_student", "save", "student_path",
           "student_record"]


def student_record(student: SamStudent, **extra) -> dict:
    """What identifies a trained student: its registry name, input size, output stride and weights."""
    return {"student": student.name, "img_size": student.img_size, "stride": student.stride,
            "model": student.state_dict(), **extra}


def student_path(path: Path) -> Path:
    """The file a student is read from: a run folder's ``student.pt``, else its last checkpoint, or the file given."""
    path = Path(path)
    if not path.exists():
        raise SrwError(f"{path}: no such run folder or student file")
    if path.is_dir():
        final = path / STUDENT_FILE
        path = final if final.is_file() else path / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not path.is_file():
            raise SrwError(f"{path.parent.parent} holds no {STUDENT_FILE} and no checkpoint (not a srw-sam run folder?)")
    return path


def load_student(path: Path) -> tuple[SamStudent, dict]:
    """A student from a run folder (its ``student.pt``, else the last checkpoint) or a file."""
    path = student_path(path)
    record = load(path)
    if "student" not in record or "model" not in record:
        raise SrwError(f"{path} is not a student file or training checkpoint of srw-sam")
    if record.get("family") == "sam2":  # a student of a SAM 2 teacher (three maps)
        from mobilesam_srw.sam.sam2_student import build_sam2_student

        student = build_sam2_student(record["student"], record["img_size"])
        student.load_state_dict(record["model"])
        return student.eval(), record
    student = build_student(record["student"], record["img_size"], record.get("stride", PATCH_SIZE))
    student.load_state_dict(record["model"])
    return student.eval(), record
