"""The SAM task on the engine: MobileSAM's TinyViT learns stored SAM image embeddings (Section 4.3).

Each image is one SRW group of its H*W patches (scope ``image``): "image patches from different
images do not affect each other". The per-patch loss is the MSE over the 256 channels (Eq. 2);
the patches' avesim was stored by precompute (or is computed from the embedding in the loader).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mobilesam_srw import shards
from mobilesam_srw.engine import EngineConfig, Losses, Targets, Task
from mobilesam_srw.errors import SrwError
from mobilesam_srw.losses import feature_mse
from mobilesam_srw.options import option
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.data import EmbeddingShards
from mobilesam_srw.sam.student import SamStudent, build_student
from mobilesam_srw.sam.transforms import PATCH_SIZE, normalize_padded, valid_patch_mask

LOSSES = ("srw", "mse")


@dataclass(kw_only=True)
class SamTrainConfig(EngineConfig):
    """``srw-sam train``: the engine's settings (the paper's AdamW, lr 0.002, batch 64, 8 epochs) and these.

    tau 0.5 is ours: the paper gives none for SAM (Table 8: 0.5-1.0 for classification).
    """

    shards: list[str] = option(help="precompute shards: globs (quote them), folders, files")
    loss: str = option("srw", choices=LOSSES,
                       help="srw: patch-wise re-weighted MSE; mse: plain MSE, the MobileSAM baseline")
    student: str = option("tinyvit-5m", help="tinyvit-5m (MobileSAM), tinyvit-micro, or timm:<name>")
    init: Path | None = option(None, help="initial weights: a run folder, student.pt, or a MobileSAM checkpoint")
    val_shards: list[str] | None = option(None, help="held-out shards, evaluated after each epoch")
    ignore_padding: bool = option(False, help="patches that lie only on SAM's padding get weight 0 (others "
                                              "renormalised)")

    RUN_FIELDS = EngineConfig.RUN_FIELDS + ("loss", "student", "ignore_padding")

    @property
    def uses_srw(self) -> bool:
        return self.loss == "srw"


def _load_init(student: SamStudent, path: Path) -> None:
    from mobilesam_srw.sam.mobilesam_format import load_mobilesam_into

    record = checkpoint.load(path / checkpoint.STUDENT_FILE if Path(path).is_dir() else path)
    if "model" in record and "student" in record:
        student.load_state_dict(record["model"])
    else:
        load_mobilesam_into(student, record)


class SamTask(Task):
    """Distil stored SAM image embeddings ``[256, 64, 64]`` into a :class:`SamStudent`."""

    scope = "image"
    plain_loss_name = "mse"

    def __init__(self, config: SamTrainConfig) -> None:
        super().__init__(config)
        self.paths = shards.resolve_shards(config.shards)
        self.embedding_shape = shards.embedding_shape(self.paths)
        self.input_size = self.embedding_shape[-1] * PATCH_SIZE

    def train_dataset(self) -> EmbeddingShards:
        return EmbeddingShards(shards.index_shards(self.paths), self.input_size)

    def val_dataset(self) -> EmbeddingShards | None:
        if not self.config.val_shards:
            return None
        paths = shards.resolve_shards(self.config.val_shards, "--val-shards")
        return EmbeddingShards(shards.index_shards(paths), self.input_size)

    def build_student(self) -> SamStudent:
        student = build_student(self.config.student, self.input_size)
        if student.embedding_shape != self.embedding_shape:
            raise SrwError(f"shard embeddings are {list(self.embedding_shape)} but student {self.config.student} "
                           f"outputs {list(student.embedding_shape)}")
        if self.config.init:
            _load_init(student, Path(self.config.init))
        return student

    def targets(self, batch: dict) -> Targets:
        mask = valid_patch_mask(batch["size"], self.embedding_shape[-1]) if self.config.ignore_padding else None
        return Targets(avesim=batch["avesim"], item_mask=mask)

    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        predicted = model(normalize_padded(batch["image"], batch["size"])).float()
        return Losses(distill=feature_mse(predicted, batch["embedding"].float(), dim=1))  # [B, H*W], Eq. 2

    def checkpoint_extra(self, module: SamStudent) -> dict:
        return {"student": module.name, "img_size": module.img_size}

    def student_record(self, module: SamStudent) -> dict:
        return checkpoint.student_record(module, loss=self.config.loss)

    def describe(self) -> str:
        return f"SAM, student {self.config.student} at {self.input_size} px, loss {self.config.loss}"
