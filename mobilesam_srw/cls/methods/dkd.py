"""DKD (Zhao et al., CVPR 2022): ``alpha TCKD + beta NCKD`` per sample, warmed up linearly over epochs."""

from __future__ import annotations

import torch

from mobilesam_srw.cls.methods.base import Method
from mobilesam_srw.losses import dkd_loss


class DKD(Method):
    def distill(self, student_out: tuple, teacher_out: tuple, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        s = self.settings
        loss = dkd_loss(student_out[0].float(), teacher_out[0].float(), labels, s.alpha, s.beta, s.temperature)
        return self.warmup_factor(epoch) * s.distill_weight * loss
