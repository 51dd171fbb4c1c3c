"""What a classification distillation method is, on the engine (after mdistiller's ``Distiller``).

A method owns the trainable module (the student, plus connectors such as FitNet's regressor) and
turns student and teacher outputs into a per-sample distillation term, which the engine re-weights
by SRW (Eq. 6) over the global batch; cross-entropy stays a plain mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MethodSettings:
    """The loss weights and hyper-parameters of one method on one data set (mdistiller's configs).

    Args:
        ce_weight: weight of the cross-entropy term.
        distill_weight: weight of the distillation term (KD's 0.9, FitNet's 100 hint weight, 1 for DKD).
        temperature: softmax temperature of KD and DKD.
        alpha, beta: DKD's TCKD and NCKD weights.
        warmup_epochs: DKD's linear warmup of the distillation term (0: none).
        hint_layer: FitNet's stage feature index.
    """

    ce_weight: float = 1.0
    distill_weight: float = 1.0
    temperature: float = 4.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int = 0
    hint_layer: int = 2


class Method(nn.Module):
    """The trainable module of a method: ``forward`` runs the student (and connectors) once.

    Args:
        student: a classifier returning ``(logits, features)`` (see ``mobilesam_srw.cls.models``).
        settings: the method's weights.
    """

    def __init__(self, student: nn.Module, settings: MethodSettings) -> None:
        super().__init__()
        self.student = student
        self.settings = settings

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.student(images)

    def distill(self, student_out: tuple, teacher_out: tuple, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """The weighted distillation term per sample ``[B]`` (before SRW)."""
        raise NotImplementedError

    def warmup_factor(self, epoch: int) -> float:
        """mdistiller's ``min(epoch / warmup, 1)`` with its 1-based epochs; 1 without warmup."""
        warmup = self.settings.warmup_epochs
        return min((epoch + 1) / warmup, 1.0) if warmup else 1.0
