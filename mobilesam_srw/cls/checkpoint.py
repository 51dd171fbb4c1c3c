"""The trained classifier file (a run's ``student.pt``): loading it back, checked field by field.

Run checkpoints (atomic, ``weights_only`` loadable, with RNG states) are the engine's
(:mod:`mobilesam_srw.engine.checkpoint`); the record is :meth:`mobilesam_srw.cls.task.ClsTask.student_record`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mobilesam_srw.cls import models
from mobilesam_srw.cls.task import STUDENT_RECORD
from mobilesam_srw.engine import checkpoint
from mobilesam_srw.errors import SrwError

# Fields of a student record that are text (the optional ones may be null).
_TEXT_FIELDS = {"model_name": False, "family": False, "dataset": False, "teacher": True, "teacher_checkpoint": True}


def load_classifier(run: Path) -> tuple[nn.Module, dict]:
    """The trained model of a run folder (its ``student.pt``) or of a student file, in eval mode, and its record.

    A file that is not a well-formed srw-cls student (its fields, its weights' keys and shapes, finite
    weights) is one line naming it.
    """
    path = Path(run)
    path = path / checkpoint.STUDENT_FILE if path.is_dir() else path
    record = checkpoint.load(path)
    if record.get("kind") != STUDENT_RECORD:
        raise SrwError(f"{path} is not a finished srw-cls run (no {checkpoint.STUDENT_FILE} of srw-cls)")
    for name, optional in _TEXT_FIELDS.items():
        if not (isinstance(record.get(name), str) or (optional and record.get(name) is None)):
            raise SrwError(f"{path}: its record's {name} is {record.get(name)!r:.80}, not a name")
    model = models.create(record["model_name"], record.get("num_classes"), record["family"])
    models.load_weights(model, record.get("model"), str(path))
    return model.eval(), record
