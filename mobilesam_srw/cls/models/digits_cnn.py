"""Small CNNs for scikit-learn's 8x8 handwritten digits (1 channel): the CPU demo's teacher and students.

Three 3x3 conv-BN-ReLU stages (8x8, 4x4, 2x2), global average pooling and a linear classifier; the
output contract of every registry model: ``(logits, {"feats": [...], "pooled_feat": [B, D]})`` with
``feats`` the three stage maps and the pooled feature, so FitNet's hint layer 2 is the 2x2 stage.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    """Args: width: channels of the first stage (doubled at each of the next two); num_classes: outputs."""

    def __init__(self, width: int, num_classes: int = 10) -> None:
        super().__init__()
        self.stages = nn.ModuleList([_stage(1, width, 1), _stage(width, 2 * width, 2), _stage(2 * width, 4 * width, 2)])
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled), {"feats": [*feats, pooled], "pooled_feat": pooled}


def cnn_digits_teacher(num_classes: int = 10) -> DigitsCNN:
    return DigitsCNN(32, num_classes)


def cnn_digits_student(num_classes: int = 10) -> DigitsCNN:
    return DigitsCNN(8, num_classes)
