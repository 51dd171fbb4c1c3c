"""FitNet (Romero et al.): a regressor maps the student's hint-layer feature to the teacher's; MSE per sample."""

from __future__ import annotations

import torch
from torch import nn

from mobilesam_srw.cls.methods.base import Method, MethodSettings
from mobilesam_srw.losses import fitnet_loss


class ConvReg(nn.Sequential):
    """mdistiller's ConvReg: a convolution fitting the student map ``[C_s, H_s, W_s]`` to ``[C_t, H_t, W_t]``,
    then BatchNorm and ReLU (a stride-2 3x3 conv to halve, a 4x4 transposed conv to double, else a valid conv)."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape[-3:], teacher_shape[-3:]
        if s_h == 2 * t_h:
            conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"FitNet: student hint {s_h}x{s_w} cannot be fitted to the teacher's {t_h}x{t_w}")
        super().__init__(conv, nn.BatchNorm2d(t_c), nn.ReLU(inplace=True))


class FitNet(Method):
    """Args (beyond :class:`Method`'s): ``student_hint_shape`` and ``teacher_hint_shape`` ``[C, H, W]``."""

    def __init__(
        self,
        student: nn.Module,
        settings: MethodSettings,
        student_hint_shape: tuple[int, ...],
        teacher_hint_shape: tuple[int, ...],
    ) -> None:
        super().__init__(student, settings)
        self.connector = ConvReg(student_hint_shape, teacher_hint_shape)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits, features = self.student(images)
        return logits, {**features, "hint": self.connector(features["feats"][self.settings.hint_layer])}

    def distill(self, student_out: tuple, teacher_out: tuple, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        teacher_hint = teacher_out[1]["feats"][self.settings.hint_layer]
        return self.settings.distill_weight * fitnet_loss(student_out[1]["hint"].float(), teacher_hint.float())
