"""The CLIP task on the engine: a TinyViT student learns an open_clip teacher's image embeddings (Section 4.2).

Only the image encoder is distilled: the loss is the per-sample MSE between the student's and the
teacher's ``[D]`` image embeddings (Eq. 2 with ``dim=-1``), and SRW groups are the samples of the
**global** batch (engine scope ``batch``): Eq. 4 compares the teacher's image embeddings, Eq. 5 weights
each sample's MSE. Targets are the embeddings precompute stored next to the pixels the teacher saw;
with ``--online`` the teacher recomputes them from those pixels in every step instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from mobilesam_srw import shards
from mobilesam_srw.clip import checkpoint
from mobilesam_srw.clip import shards as clip_shards
from mobilesam_srw.clip.dataset import ClipEmbeddingShards
from mobilesam_srw.clip.student import (
    CLIP_STUDENTS,
    DEFAULT_CLIP_STUDENT,
    build_clip_student,
    timm_model_name,
)
from mobilesam_srw.clip.teacher import ClipTeacher, normalize_pixels
from mobilesam_srw.clip.teacher_record import rebuild_teacher
from mobilesam_srw.engine import Losses, Targets, Task
from mobilesam_srw.engine.config import FeatureDistillationConfig
from mobilesam_srw.errors import SrwError
from mobilesam_srw.losses import feature_mse
from mobilesam_srw.options import option


@dataclass(kw_only=True)
class ClipTrainConfig(FeatureDistillationConfig):
    """``srw-clip train``: the engine's settings with the paper's CLIP recipe as defaults, and these.

    The paper's (Section 4.2): lr 0.001, batch 1024, 10 epochs. ``batch_size`` is per rank and micro-step,
    so the default 1024 x 1 rank x ``grad_accum`` 1 is the paper's global batch; on 8 GPUs pass
    ``--batch-size 128``, on one small GPU ``--batch-size 256 --grad-accum 4``. Ours: AdamW with weight
    decay 0.01 (not on norms, biases, attention biases), 2% linear warmup then cosine (the SAM path's
    recipe; the paper names no optimiser or schedule for CLIP), and tau 0.5 (the paper gives no tau for
    CLIP; 0.5 is the SAM path's and the low end of Table 8's best range 0.5-1.0).
    """

    # The recipe is AdamW with warmup and cosine (the SAM path's); the SGD and step-schedule options do not apply.
    UNUSED_OPTIONS: ClassVar[tuple[str, ...]] = ("optimizer", "momentum", "schedule", "milestones", "lr_decay")

    shards: list[str] = option(help="srw-clip precompute shards: globs (quote them), folders, files")
    student: str = option(DEFAULT_CLIP_STUDENT, help=f"{', '.join(CLIP_STUDENTS)} (TinyViT, the paper's), "
                                                     "or timm:<name>")
    online: bool = option(False, help="run the teacher on the stored pixels in every step instead of reading the "
                                      "stored embeddings")
    teacher_checkpoint: Path | None = option(None, help="--online: the teacher's checkpoint (default: the path "
                                                        "precompute recorded)")
    val_shards: list[str] | None = option(None, help="held-out srw-clip shards, evaluated after each epoch")
    epochs: int = option(10, help="training epochs", minimum=1)
    lr: float = option(0.001, help="peak learning rate", above=0)
    batch_size: int = option(1024, help="samples per rank and micro-step (global batch = this x ranks x "
                                        "--grad-accum)", minimum=1)

    RUN_FIELDS = FeatureDistillationConfig.RUN_FIELDS + ("student", "online")

    def check(self) -> None:
        super().check()
        timm_model_name(self.student)  # an unknown student is refused before any data is read
        if self.teacher_checkpoint is not None and not self.online:
            raise SrwError("--teacher-checkpoint goes with --online (stored embeddings need no teacher)")


@dataclass(frozen=True)
class _ShardSet:
    """Shard paths with the facts their manifests give."""

    paths: list[str]
    teacher: dict
    teacher_checkpoint: str | None
    image_size: tuple[int, int]
    embed_dim: int

    @classmethod
    def resolve(cls, patterns: list[str], option_name: str, partial: bool = False) -> "_ShardSet":
        paths = shards.resolve_shards(patterns, option_name, partial)
        manifests = clip_shards.read_clip_manifests(paths)
        teacher = clip_shards.shard_teacher(paths)
        recorded = manifests[0].get("teacher_checkpoint")
        return cls(paths, teacher, recorded if isinstance(recorded, str) else None, tuple(teacher["image_size"]),
                   int(teacher["embed_dim"]))

    def dataset(self, with_embedding: bool) -> ClipEmbeddingShards:
        """The shards' samples, each checked against the manifest (count, image size, embedding size)."""
        samples = clip_shards.index_clip_shards(self.paths, clip_shards.listed_counts(self.paths))
        return ClipEmbeddingShards(samples, with_embedding, self.image_size, self.embed_dim)


class ClipTask(Task):
    """Distil an open_clip teacher's image embeddings ``[D]`` into a timm student with a linear projection."""

    scope = "batch"
    plain_loss_name = "mse"

    def __init__(self, config: ClipTrainConfig) -> None:
        super().__init__(config)
        self.data = _ShardSet.resolve(config.shards, "--shards", config.partial_shards)
        self.teacher: ClipTeacher | None = None
        if config.online:
            self.teacher = rebuild_teacher(self.data.teacher, config.teacher_checkpoint, self.data.teacher_checkpoint)
        self.mean, self.std = tuple(self.data.teacher["mean"]), tuple(self.data.teacher["std"])

    def train_dataset(self) -> ClipEmbeddingShards:
        return self.data.dataset(with_embedding=not self.config.online)

    def val_dataset(self) -> ClipEmbeddingShards | None:
        if not self.config.val_shards:
            return None
        held_out = _ShardSet.resolve(self.config.val_shards, "--val-shards", self.config.partial_shards)
        if held_out.teacher["checkpoint_sha256"] != self.data.teacher["checkpoint_sha256"]:
            raise SrwError("--val-shards were written by another teacher than --shards")
        return held_out.dataset(with_embedding=not self.config.online)

    def build_student(self) -> nn.Module:
        return build_clip_student(self.config.student, self.data.embed_dim, self.data.image_size)

    def to(self, device: torch.device) -> "ClipTask":
        if self.teacher is not None:
            self.teacher.model.to(device)
        return self

    def targets(self, batch: dict) -> Targets:
        if self.teacher is not None:  # --online: the teacher on the stored pixels, in float32
            with torch.autocast(batch["pixels"].device.type, enabled=False):
                embedding = self.teacher.encode(batch["pixels"])
        else:
            embedding = batch["embedding"].float()
        return Targets(features=embedding, data=embedding)  # Eq. 4 compares the teacher's image embeddings

    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        predicted = model(normalize_pixels(batch["pixels"], self.mean, self.std)).float()
        return Losses(distill=feature_mse(predicted, targets.data, dim=-1))  # [B], Eq. 2 per sample

    def _record(self, module: nn.Module) -> dict:
        return checkpoint.student_record(module, self.config.student, self.data.embed_dim, list(self.data.image_size),
                                         self.data.teacher, self.data.teacher_checkpoint, loss=self.config.loss)

    def data_identity(self) -> dict[str, dict[str, str]]:
        return {"--shards": shards.shards_identity(self.data.paths)}

    def checkpoint_extra(self, module: nn.Module) -> dict:
        return {key: value for key, value in self._record(module).items() if key != "model"}

    def student_record(self, module: nn.Module) -> dict:
        return self._record(module)

    def describe(self) -> str:
        source = "teacher online" if self.config.online else "stored embeddings"
        return (f"CLIP, student {self.config.student} at {self.data.image_size[0]}x{self.data.image_size[1]} px -> "
                f"{self.data.embed_dim}-d, teacher {self.data.teacher['name']} ({source}), loss {self.config.loss}")

