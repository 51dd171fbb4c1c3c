"""The SAM task on the engine: a student learns stored teacher image embeddings (Section 4.3).

Each image is one SRW group of its H*W patches (scope ``image``): "image patches from different
images do not affect each other". The per-patch loss is the MSE over the 256 channels (Eq. 2);
the patches' avesim was stored by precompute (or is computed from the embedding in the loader).

The teacher's input size, preprocessing and patch size come from its record in the shards'
manifest (:func:`~mobilesam_srw.sam.teachers.shards.shard_teacher`): the student sees the stored
image normalised as the teacher saw it (LiteMedSAM: per-image min-max; SAM: its mean and std),
resized to the student's own input size when that differs, and its output stride is chosen so
its grid is the teacher's (LiteMedSAM at 256 px: 64 x 64, stride 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import nn

from mobilesam_srw import shards
from mobilesam_srw.engine import Losses, Targets, Task
from mobilesam_srw.engine.config import FeatureDistillationConfig
from mobilesam_srw.errors import SrwError
from mobilesam_srw.losses import feature_mse
from mobilesam_srw.options import option
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.data import EmbeddingShards, embedding_statistics
from mobilesam_srw.sam.preprocessing import student_input
from mobilesam_srw.sam.sam2_loss import Sam2LossOptions
from mobilesam_srw.sam.student import (
    SamStudent,
    build_student,
    match_output_statistics,
    student_stride,
)
from mobilesam_srw.sam.teachers.shards import shard_teacher
from mobilesam_srw.sam.transforms import INPUT_SIZE, valid_patch_mask

OUTPUT_INITS = ("default", "teacher-stats")
STATISTICS_SAMPLES = 64


@dataclass(kw_only=True)
class SamTrainConfig(Sam2LossOptions, FeatureDistillationConfig):
    """``srw-sam train``: the engine's settings (the paper's AdamW, lr 0.002, batch 64, 8 epochs) and these
    (the ``high_res_*`` ones apply to SAM 2 teachers' shards: :mod:`~mobilesam_srw.sam.sam2_loss`).

    tau 0.5 is ours: the paper gives none for SAM (Table 8: 0.5-1.0 for classification).
    """

    # Sample-wise options that do not apply to SAM's patch-wise groups, or recipes SAM does not use.
    UNUSED_OPTIONS: ClassVar[tuple[str, ...]] = ("srw_scope", "optimizer", "momentum", "schedule", "milestones",
                                                 "lr_decay")

    shards: list[str] = option(help="precompute shards: globs (quote them), folders, files")
    student: str = option("tinyvit-5m", help="tinyvit-5m (MobileSAM), tinyvit-micro, or timm:<name>")
    student_size: int | None = option(None, minimum=16, maximum=INPUT_SIZE,
                                      help="the student's input size in px (default: the teacher's); its output "
                                           "stride is this size / the teacher's grid (TinyViT: 4, 8 or 16)")
    init: Path | None = option(None, help="initial weights: a run folder, student.pt, or a MobileSAM checkpoint")
    val_shards: list[str] | None = option(None, help="held-out shards, evaluated after each epoch")
    output_init: str = option("default", choices=OUTPUT_INITS,
                              help="teacher-stats: the neck's last LayerNorm starts at the teacher embeddings' "
                                   "per-channel mean and std (of up to 64 training samples; for teachers far from "
                                   "unit scale, e.g. litemedsam); ignored with --init")
    ignore_padding: bool = option(False, help="patches that lie only on the teacher's padding get weight 0 "
                                              "(others renormalised)")

    RUN_FIELDS = FeatureDistillationConfig.RUN_FIELDS + ("student", "student_size", "ignore_padding")


def _load_init(student: SamStudent, path: Path) -> None:
    from mobilesam_srw.sam.mobilesam_format import load_mobilesam_into

    record = checkpoint.load(path / checkpoint.STUDENT_FILE if Path(path).is_dir() else path)
    if "model" in record and "student" in record:
        student.load_state_dict(record["model"])
    else:
        load_mobilesam_into(student, record)


class SamTask(Task):
    """Distil stored teacher image embeddings (``[256, 64, 64]`` for SAM and LiteMedSAM) into a :class:`SamStudent`."""

    scope = "image"
    plain_loss_name = "mse"

    def __init__(self, config: SamTrainConfig) -> None:
        super().__init__(config)
        self.paths = shards.resolve_shards(config.shards, partial=config.partial_shards)
        self.embedding_shape = shards.embedding_shape(self.paths)
        self.teacher = shard_teacher(self.paths)
        if tuple(self.teacher.spec.embedding_shape) != tuple(self.embedding_shape):
            raise SrwError(f"the manifest says embeddings {list(self.teacher.spec.embedding_shape)}, the shards hold "
                           f"{list(self.embedding_shape)}")
        self.input_size = self.teacher.spec.input_size  # the stored images' frame
        self.preprocessing = self.teacher.preprocessing
        self.student_size = config.student_size or self.input_size
        self.stride = student_stride(self.student_size, self.embedding_shape[-1])
        self.maps: tuple[str, ...] = ()  # further target maps the loader reads (SAM 2's)

    def train_dataset(self) -> EmbeddingShards:
        return EmbeddingShards(shards.index_shards(self.paths), self.input_size, self.maps)

    def val_dataset(self) -> EmbeddingShards | None:
        if not self.config.val_shards:
            return None
        paths = shards.resolve_shards(self.config.val_shards, "--val-shards", self.config.partial_shards)
        shard_teacher([*self.paths, *paths])  # the same teacher, or one line
        return EmbeddingShards(shards.index_shards(paths), self.input_size, self.maps)

    def build_student(self) -> SamStudent:
        student = build_student(self.config.student, self.student_size, self.stride)
        if student.embedding_shape != self.embedding_shape:
            raise SrwError(f"shard embeddings are {list(self.embedding_shape)} but student {self.config.student} "
                           f"outputs {list(student.embedding_shape)}")
        if self.config.init:
            _load_init(student, Path(self.config.init))
        elif self.config.output_init == "teacher-stats":
            match_output_statistics(student, *embedding_statistics(self.train_dataset(), STATISTICS_SAMPLES))
        return student

    def targets(self, batch: dict) -> Targets:
        mask = None
        if self.config.ignore_padding:
            mask = valid_patch_mask(batch["size"], self.embedding_shape[-1], self.teacher.patch_size)
        return Targets(avesim=batch["avesim"], item_mask=mask)

    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        images = student_input(self.preprocessing, batch["image"], batch["size"], self.student_size)
        predicted = model(images).float()
        return Losses(distill=feature_mse(predicted, batch["embedding"].float(), dim=1))  # [B, H*W], Eq. 2

    def data_identity(self) -> dict[str, dict[str, str]]:
        return {"--shards": shards.shards_identity(self.paths)}

    def checkpoint_extra(self, module: SamStudent) -> dict:
        return {"student": module.name, "img_size": module.img_size, "stride": module.stride}

    def student_record(self, module: SamStudent) -> dict:
        return checkpoint.student_record(module, loss=self.config.loss, teacher=self.teacher.record)

    def describe(self) -> str:
        return (f"SAM, teacher {self.teacher.name} ({self.input_size} px, {self.teacher.spec.preprocessing} "
                f"preprocessing), student {self.config.student} at {self.student_size} px stride {self.stride}, "
                f"loss {self.config.loss}")
