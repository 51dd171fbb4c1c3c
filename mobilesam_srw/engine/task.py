"""The seam between the engine and a task (SAM, classification, CLIP), after mdistiller's ``Distiller``.

A task says what its student, teacher, data and per-item losses are; the engine owns the loop:
the order of batches, DDP, AMP, accumulation, SRW weighting and reduction, checkpoints and logs.
One optimiser step runs in three phases over its micro-batches, so that SRW groups spanning the
whole global batch are exact:

1. :meth:`Task.targets` for every micro-batch (teacher outputs, no gradient);
2. the engine turns their SRW features (or stored avesim) into weights (Eq. 4-5);
3. :meth:`Task.losses` for every micro-batch (student forward), weighted and backpropagated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mobilesam_srw.engine.config import EngineConfig
from mobilesam_srw.engine.optim import decay_groups

Scope = Literal["image", "batch"]


@dataclass
class Targets:
    """What the teacher side gives for one micro-batch (computed without gradient).

    Args:
        features: ``[B, D]`` teacher features of each sample, for sample-wise SRW (``batch`` scope).
        avesim: ``[B, N]`` average similarities of each sample's N items, for item-wise SRW (``image``
            scope), e.g. stored with the shards.
        item_mask: ``[B, N]`` bool, items that count (others get weight 0; e.g. SAM's padding patches).
        data: anything :meth:`Task.losses` needs from the teacher (logits, embeddings, ...).
    """

    features: torch.Tensor | None = None
    avesim: torch.Tensor | None = None
    item_mask: torch.Tensor | None = None
    data: Any = None


@dataclass
class Losses:
    """Unreduced losses of one micro-batch.

    Args:
        distill: the distillation loss per sample ``[B]`` (``batch`` scope) or per item ``[B, N]``
            (``image`` scope); the engine re-weights it by SRW (Eq. 6).
        extra: other terms per sample ``[B]`` (e.g. cross-entropy), reduced as a plain mean over the
            global batch and added to the objective.
        metrics: per-sample values ``[B]`` to average in validation (e.g. top-1 correct), not trained.
    """

    distill: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Task(ABC):
    """A distillation task on the engine.

    Attributes:
        scope: ``"image"`` (each sample's N items are one SRW group: SAM's patches) or ``"batch"``
            (the samples of the global batch are one group: classification, CLIP).
        plain_loss_name: name of the unweighted distillation mean in validation metrics.
        student_file_kind: a word for logs (``"student"``).
    """

    scope: Scope = "batch"
    plain_loss_name: str = "distill"

    def __init__(self, config: EngineConfig) -> None:
        config.check()  # every option, before a subclass reads any data or a run folder is made
        self.config = config

    @abstractmethod
    def train_dataset(self) -> Dataset:
        """Map-style dataset whose items are dicts of tensors (and a ``key`` string)."""

    def val_dataset(self) -> Dataset | None:
        """Held-out data evaluated after each epoch, if any."""
        return None

    @abstractmethod
    def build_student(self) -> nn.Module:
        """The trainable module (the student, plus connectors a method needs); seeded by the engine."""

    def to(self, device: torch.device) -> "Task":
        """Move frozen parts (a teacher) to ``device``."""
        return self

    def param_groups(self, module: nn.Module) -> list[dict]:
        """Optimiser parameter groups; by default no weight decay on norms, biases and attention biases."""
        return decay_groups(module, self.config.weight_decay)

    @abstractmethod
    def targets(self, batch: dict) -> Targets:
        """Teacher side of a micro-batch already on the device (run under ``torch.no_grad``)."""

    @abstractmethod
    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        """Student side: call ``model`` (possibly DDP-wrapped) once and return unreduced losses.

        Args:
            model: the trainable module, to call for the forward pass.
            batch: the micro-batch on the device.
            targets: what :meth:`targets` returned for it.
            epoch: the 0-based epoch (e.g. for DKD's warmup of the distillation term).
        """

    @abstractmethod
    def student_record(self, module: nn.Module) -> dict:
        """The final student file's content (``student.pt``): weights and what rebuilds them."""

    def data_identity(self) -> dict[str, dict[str, str]]:
        """What the run reads, for ``--resume`` to refuse other data: option -> ``{"path", "fingerprint"}``,
        a fingerprint of the content (not only of the path), computed once per run."""
        return {}

    def checkpoint_extra(self, module: nn.Module) -> dict:
        """Fields a checkpoint carries besides the engine's (e.g. the student's name and size)."""
        return {}

    def describe(self) -> str:
        """One line for the start of the run log."""
        return type(self).__name__
