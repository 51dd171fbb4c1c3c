"""The classification task on the engine: KD, FitNet or DKD from a frozen teacher, or a teacher's own training.

SRW groups are the samples of the global batch (engine scope ``batch``): Eq. 4 compares the teacher's
pooled penultimate features (or logits, ``--srw-feature``), Eq. 5 weights each sample's distillation
term, and cross-entropy stays a plain mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_srw.cls import models
from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.data import DATASETS, build_datasets
from mobilesam_srw.cls.methods import METHODS, Method, MethodSettings, method_settings
from mobilesam_srw.cls.methods.fitnet import FitNet
from mobilesam_srw.engine import Losses, Targets, Task
from mobilesam_srw.engine.optim import uniform_decay_groups
from mobilesam_srw.metrics import topk_correct

STUDENT_RECORD = "srw-cls student"


def srw_feature(logits: torch.Tensor, features: dict, name: str) -> torch.Tensor:
    """The teacher output Eq. 4 compares (``--srw-feature``): ``penultimate`` (the pooled penultimate feature)
    or ``logits``; training weights and ``srw-cls eval``'s bands both take it from here."""
    return features["pooled_feat"] if name == "penultimate" else logits


class ClsTask(Task):
    """Distil (or, without a method, train) a classifier on CIFAR, ImageNet or scikit-learn's digits."""

    scope = "batch"
    plain_loss_name = "distill"

    def __init__(self, config: ClsTrainConfig) -> None:
        super().__init__(config)
        self.train_set, self.val_set, self.num_classes = build_datasets(
            config.dataset, config.data, train_transform=config.augment
        )
        self.teacher: nn.Module | None = None
        if config.method is not None:
            self.teacher = models.create(config.teacher, self.num_classes, config.family)
            models.load_teacher_checkpoint(self.teacher, config.teacher_checkpoint)
            self.teacher.eval().requires_grad_(False)

    def data_identity(self) -> dict[str, dict[str, str]]:
        from mobilesam_srw.cls.data import dataset_fingerprint
        from mobilesam_srw.weights import file_sha256

        config = self.config
        identity = {"--data": {"path": str(config.data) if config.data else config.dataset,
                               "fingerprint": dataset_fingerprint(self.train_set, self.val_set)}}
        if config.teacher_checkpoint is not None:
            identity["--teacher-checkpoint"] = {"path": str(config.teacher_checkpoint),
                                                "fingerprint": file_sha256(config.teacher_checkpoint)}
        return identity

    def train_dataset(self):
        return self.train_set

    def val_dataset(self):
        return self.val_set

    def build_student(self) -> Method:
        self.method = self._build_method()  # kept: losses() call its distill() (model may be wrapped)
        return self.method

    def _build_method(self) -> Method:
        config = self.config
        student = models.create(config.student, self.num_classes, config.family)
        if config.method is None:
            return Method(student, MethodSettings())  # cross-entropy only: a teacher of its own
        settings = method_settings(config.method, config.family, config.teacher, config.student)
        if config.method == "fitnet":
            spec = DATASETS[config.dataset]
            shapes = [models.feature_shapes(m, spec.image_size, spec.in_channels)[settings.hint_layer]
                      for m in (student, self.teacher)]
            return FitNet(student, settings, *shapes)
        return METHODS[config.method](student, settings)

    def to(self, device: torch.device) -> "ClsTask":
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def param_groups(self, module: nn.Module) -> list[dict]:
        return uniform_decay_groups(module, self.config.weight_decay)  # mdistiller: decay on every parameter

    def targets(self, batch: dict) -> Targets:
        if self.teacher is None:
            return Targets()
        logits, features = self.teacher(batch["image"])
        compared = srw_feature(logits, features, self.config.srw_feature)
        return Targets(features=compared.float(), data=(logits.float(), features))

    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        method = self.method
        out = model(batch["image"])
        logits, labels = out[0].float(), batch["label"]
        ce = F.cross_entropy(logits, labels, reduction="none")
        metrics = {"top1": topk_correct(logits, labels, 1).float(), "top5": topk_correct(logits, labels, 5).float()}
        if self.teacher is None:
            return Losses(distill=torch.zeros_like(ce), extra={"ce": ce}, metrics=metrics)
        distill = method.distill(out, targets.data, labels, epoch)
        return Losses(distill=distill, extra={"ce": method.settings.ce_weight * ce}, metrics=metrics)

    def student_record(self, module: Method) -> dict:
        config = self.config
        return {
            "kind": STUDENT_RECORD,
            "model_name": config.student,
            "num_classes": self.num_classes,
            "family": config.family,
            "dataset": config.dataset,
            "teacher": config.teacher,
            "teacher_checkpoint": str(config.teacher_checkpoint) if config.teacher_checkpoint else None,
            "method": config.method,
            "srw": config.srw,
            "srw_feature": config.srw_feature,
            "model": module.student.state_dict(),
        }

    def describe(self) -> str:
        config = self.config
        if config.method is None:
            return f"{config.dataset}: train {config.student} with cross-entropy"
        srw = f" + SRW (tau {config.tau}, {config.normalizer}, {config.srw_feature})" if config.srw else ""
        return f"{config.dataset}: {config.method.upper()}{srw}, {config.teacher} -> {config.student}"
