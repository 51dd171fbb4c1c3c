"""CIFAR ResNets of depth 6n+2 (resnet8 ... resnet110, resnet8x4, resnet32x4), mdistiller's layout.

Three stages of BasicBlocks after a 3x3 stem; stage widths ``[16, 32, 64]`` (``x4``: ``[64, 128, 256]``
after a 32-wide stem). Parameter names match mdistiller's and RepDistiller's ``resnet.py``
(``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,downsample.{0,1}}, fc``), so their
``cifar_teachers`` checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual; returns ``(relu(out), out)``, the output and its pre-activation."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact


def run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of a stage in turn; the output and pre-activation of the last one."""
    preact = x
    for block in stage:
        x, preact = block(x)
    return x, preact


def staged_features(stem: torch.Tensor, stages: tuple[nn.Sequential, ...]) -> tuple[torch.Tensor, dict]:
    """The stages after the stem: the globally pooled last map, and mdistiller's feature dict
    (``feats`` and ``preact_feats``: the stem and each stage's output; ``pooled_feat``).

    mdistiller pools with a fixed ``AvgPool2d`` over the last map (8x8 or 4x4 on CIFAR); the
    adaptive pool is the same there and also serves other input sizes.
    """
    feats, preacts, x = [stem], [stem], stem
    for stage in stages:
        x, preact = run_stage(stage, x)
        feats.append(x)
        preacts.append(preact)
    pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return pooled, {"feats": feats, "preact_feats": preacts, "pooled_feat": pooled}


def init_convs_kaiming(model: nn.Module) -> None:
    """He initialisation of every convolution (mdistiller's ResNets)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    """ResNet of depth 6n+2 for 32x32 inputs.

    Args:
        depth: 6n+2 (8, 14, 20, 32, 44, 56, 110).
        widths: stem width, then the three stage widths.
        num_classes: classifier outputs.

    ``forward(x) -> (logits, features)``; ``features["feats"]`` = stem, stage 1, 2, 3 outputs
    (after ReLU), ``features["preact_feats"]`` the same before the last ReLU (stem repeated),
    ``features["pooled_feat"]`` the global average ``[B, widths[3]]``.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth: must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        stages = []
        for channels, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [BasicBlock(in_channels, channels, stride)]
            blocks += [BasicBlock(channels, channels) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_channels, num_classes)
        init_convs_kaiming(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        pooled, features = staged_features(F.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        return self.fc(pooled), features


def _resnet(depth: int, widths: tuple[int, int, int, int]):
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)

    return build


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

resnet8 = _resnet(8, _NARROW)
resnet14 = _resnet(14, _NARROW)
resnet20 = _resnet(20, _NARROW)
resnet32 = _resnet(32, _NARROW)
resnet44 = _resnet(44, _NARROW)
resnet56 = _resnet(56, _NARROW)
resnet110 = _resnet(110, _NARROW)
resnet8x4 = _resnet(8, _WIDE)
resnet32x4 = _resnet(32, _WIDE)
