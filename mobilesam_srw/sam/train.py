"""``srw-sam train``: distil SAM's image embeddings into a student with patch-wise SRW (Section 4.3).

The loop, run folder, checkpoints and logs are the engine's (:mod:`mobilesam_srw.engine.fit`);
:class:`~mobilesam_srw.sam.task.SamTask` says what is distilled.
"""

from __future__ import annotations

from mobilesam_srw.engine import fit
from mobilesam_srw.sam.task import SamTask, SamTrainConfig

__all__ = ["SamTrainConfig", "train"]


def train(config: SamTrainConfig) -> dict:
    """Train (or resume) a SAM student run; returns the last step's metrics and the last validation."""
    return fit(SamTask(config))
