"""CIFAR ResNet18 and ResNet50 (four stages, 64-512 wide, 3x3 stem), mdistiller's ``resnetv2.py`` layout.

Parameter names: ``conv1, bn1, layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3],shortcut.{0,1}}, linear``.
Not to be confused with the ImageNet ResNets (``imagenet.py``), which have a 7x7 stem and max-pool.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilesam_srw.cls.models.resnet import init_convs_kaiming, staged_features


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Identity (an empty Sequential, no parameters) or a strided 1x1 conv + BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """3x3, 3x3; returns ``(relu(out), out)``."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        preact = out + self.shortcut(x)
        return F.relu(preact), preact


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 to 4x the width; returns ``(relu(out), out)``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(preact), preact


class CifarResNetV2(nn.Module):
    """Four-stage ResNet for 32x32 inputs.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        blocks_per_stage: e.g. ``(2, 2, 2, 2)`` for ResNet18, ``(3, 4, 6, 3)`` for ResNet50.
        num_classes: classifier outputs.

    ``features["feats"]``: stem and the four stage outputs; ``"preact_feats"``: the same before
    the last ReLU; ``"pooled_feat"``: ``[B, 512 * block.expansion]``.
    """

    def __init__(self, block: type, blocks_per_stage: tuple[int, ...], num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        stages = []
        for channels, count, stride in zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2)):
            blocks = []
            for index in range(count):
                blocks.append(block(in_channels, channels, stride if index == 0 else 1))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_channels, num_classes)
        init_convs_kaiming(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        pooled, features = staged_features(F.relu(self.bn1(self.conv1(x))), stages)
        return self.linear(pooled), features


def ResNet18(num_classes: int = 100) -> CifarResNetV2:
    return CifarResNetV2(BasicBlock, (2, 2, 2, 2), num_classes)


def ResNet50(num_classes: int = 100) -> CifarResNetV2:
    return CifarResNetV2(Bottleneck, (3, 4, 6, 3), num_classes)
