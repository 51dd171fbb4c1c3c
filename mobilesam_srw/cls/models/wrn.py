"""Wide ResNets wrn_{depth}_{width} for CIFAR (Zagoruyko & Komodakis), mdistiller's ``wrn.py`` layout.

Pre-activation blocks: BN-ReLU-conv-BN-ReLU-conv. Parameter names:
``conv1, block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2[,convShortcut]}, bn1, fc``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Pre-activation residual block; a 1x1 ``convShortcut`` (on the activated input) when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.equal_in_out = in_channels == out_channels
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.equal_in_out else self.convShortcut(activated))


class NetworkBlock(nn.Module):
    """A stage: ``layer`` holds its blocks (the extra level is part of the checkpoint names)."""

    def __init__(self, num_blocks: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_channels if index == 0 else out_channels, out_channels, stride if index == 0 else 1)
                for index in range(num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs.

    Args:
        depth: 6n+4 (16, 40).
        widen_factor: width multiplier of the stages ``[16, 32, 64] * k``.
        num_classes: classifier outputs.

    ``features["feats"]``: stem conv and the three stage outputs (pre-activation blocks: no ReLU);
    ``"preact_feats"``: stem, then each stage output passed through the BN that the next block
    (or the final BN) applies to it, as mdistiller computes it (in training mode those BNs thus
    see each batch twice, as in mdistiller); ``"pooled_feat"``: ``[B, 64 * k]`` after BN-ReLU.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth: must be 6n+4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks_per_stage, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(blocks_per_stage, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(blocks_per_stage, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = F.adaptive_avg_pool2d(F.relu(self.bn1(f3)), 1).flatten(1)
        preact = [f0, self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3)]
        features = {"feats": [f0, f1, f2, f3], "preact_feats": preact, "pooled_feat": pooled}
        return self.fc(pooled), features


def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 1, num_classes)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)
