"""MobileNetV2 for CIFAR as mdistiller's ``mobile_half`` (expansion 6, width 0.5), its layout.

Parameter names: ``conv1.{0,1}``, ``blocks.{s}.{i}.conv.{0,1,3,4,6,7}`` (expand 1x1, BN,
depthwise 3x3, BN, project 1x1, BN), ``conv2.{0,1}``, ``classifier.0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# (expansion, output channels, blocks, first stride) per stage; expansion None means the model's T.
STAGES = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise 3x3, linear project 1x1; residual when stride 1 and widths equal."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs (stride-2 stem).

    Args:
        expansion: T, the expansion of all stages but the first.
        width_mult: channel multiplier (the 1280-wide head is kept for ``width_mult <= 1``).
        num_classes: classifier outputs.

    ``features["feats"]``: stem, and the outputs of stages 2, 3, 5 and 7 (mdistiller's choice);
    ``"pooled_feat"``: ``[B, 1280]``. No pre-activation features (the stages end in linear BN).
    """

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100) -> None:
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, 2)
        stages = []
        for stage_expansion, channels, count, stride in STAGES:
            out_channels = int(channels * width_mult)
            blocks = []
            for index in range(count):
                blocks.append(
                    InvertedResidual(
                        in_channels, out_channels, stride if index == 0 else 1, stage_expansion or expansion
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        head_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, head_channels, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(head_channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = self.conv1(x)
        feats = [out]
        for index, stage in enumerate(self.blocks):
            out = stage(out)
            if index in (1, 2, 4, 6):
                feats.append(out)
        pooled = F.adaptive_avg_pool2d(self.conv2(out), 1).flatten(1)
        return self.classifier(pooled), {"feats": feats, "pooled_feat": pooled}


def mobile_half(num_classes: int = 100) -> MobileNetV2:
    """mdistiller's ``MobileNetV2`` student: T=6, width 0.5."""
    return MobileNetV2(6, 0.5, num_classes)
