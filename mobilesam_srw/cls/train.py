"""``srw-cls train`` and ``train-teacher``: a classification run on the engine.

The loop, run folder, checkpoints and logs are the engine's (:mod:`mobilesam_srw.engine.fit`);
:class:`~mobilesam_srw.cls.task.ClsTask` says what is trained or distilled.
"""

from __future__ import annotations

from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.task import ClsTask
from mobilesam_srw.engine import fit

__all__ = ["ClsTrainConfig", "train"]


def train(config: ClsTrainConfig) -> dict:
    """Train (or resume) a run; returns the last step's metrics and the last validation (``val_top1``, ...)."""
    return fit(ClsTask(config))
