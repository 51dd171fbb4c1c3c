"""``srw-cls train`` and ``train-teacher``: a classification run on the engine, and loading its result."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mobilesam_srw.cls import models
from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.task import STUDENT_RECORD, ClsTask
from mobilesam_srw.engine import checkpoint, fit
from mobilesam_srw.errors import SrwError


def train(config: ClsTrainConfig) -> dict:
    """Train (or resume) a run; returns the last step's metrics and the last validation (``val_top1``, ...)."""
    config.check()
    return fit(ClsTask(config))


def load_classifier(run: Path) -> tuple[nn.Module, dict]:
    """The trained model of a run folder (its ``student.pt``) or of a student file, in eval mode, and its record."""
    path = Path(run)
    path = path / checkpoint.STUDENT_FILE if path.is_dir() else path
    record = checkpoint.load(path)
    if record.get("kind") != STUDENT_RECORD:
        raise SrwError(f"{path} is not a finished srw-cls run (no {checkpoint.STUDENT_FILE} of srw-cls)")
    model = models.create(record["model_name"], record["num_classes"], record["family"])
    model.load_state_dict(record["model"])
    return model.eval(), record
