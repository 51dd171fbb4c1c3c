"""KD (Hinton et al.): ``T^2 KL(softmax(t/T) || softmax(s/T))`` per sample (Eq. 1)."""

from __future__ import annotations

import torch

from mobilesam_srw.cls.methods.base import Method
from mobilesam_srw.losses import kd_loss


class KD(Method):
    def distill(self, student_out: tuple, teacher_out: tuple, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        weight = self.settings.distill_weight
        return weight * kd_loss(student_out[0].float(), teacher_out[0].float(), self.settings.temperature)
