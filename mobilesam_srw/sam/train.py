"""``srw-sam train``: distil SAM's image embeddings into a student with patch-wise SRW (Section 4.3).

The loop, run folder, checkpoints and logs are the engine's (:mod:`mobilesam_srw.engine.fit`);
:class:`~mobilesam_srw.sam.task.SamTask` says what is distilled.
"""

from __future__ import annotations

from mobilesam_srw import shards
from mobilesam_srw.engine import fit
from mobilesam_srw.sam.task import SamTask, SamTrainConfig
from mobilesam_srw.sam.teachers.shards import shard_teacher

__all__ = ["SamTrainConfig", "train"]


def train(config: SamTrainConfig) -> dict:
    """Train (or resume) a SAM student run; returns the last step's metrics and the last validation.

    Shards of a SAM 2 teacher (their record's family) train a three-map student
    (:class:`~mobilesam_srw.sam.sam2_task.Sam2Task`).
    """
    config.check()
    if shard_teacher(shards.resolve_shards(config.shards, partial=config.partial_shards)).spec.family == "sam2":
        from mobilesam_srw.sam.sam2_task import Sam2Task

        return fit(Sam2Task(config))
    return fit(SamTask(config))
