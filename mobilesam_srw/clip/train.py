"""``srw-clip train``: distil an open_clip teacher's image embeddings with sample-wise SRW (Section 4.2).

The loop, run folder, checkpoints and logs are the engine's (:mod:`mobilesam_srw.engine.fit`);
:class:`~mobilesam_srw.clip.task.ClipTask` says what is distilled.
"""

from __future__ import annotations

from mobilesam_srw.clip.task import ClipTask, ClipTrainConfig
from mobilesam_srw.engine import fit

__all__ = ["ClipTrainConfig", "train"]


def train(config: ClipTrainConfig) -> dict:
    """Train (or resume) a CLIP student run; returns the last step's metrics and the last validation."""
    return fit(ClipTask(config))
