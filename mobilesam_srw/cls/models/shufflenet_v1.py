"""ShuffleNetV1 (groups 3) for CIFAR, mdistiller's ``ShuffleV1`` layout.

Parameter names: ``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}, linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilesam_srw.cls.models.resnet import staged_features


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, g*c, H, W] -> [B, c*g, H, W]``: interleave the channels of the g groups."""
    batch, channels, height, width = x.shape
    return (
        x.reshape(batch, groups, channels // groups, height, width)
        .transpose(1, 2)
        .reshape(batch, channels, height, width)
    )


class Bottleneck(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; stride 2 concatenates an avg-pooled shortcut.

    Returns ``(relu(out), out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_channels = out_channels // 4
        # The 24-channel stem output is too narrow to group: the first 1x1 is dense there.
        self.first_groups = 1 if in_channels == 24 else groups
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, groups=mid_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], dim=1)
        else:
            preact = out + x
        return F.relu(preact), preact


class ShuffleNetV1(nn.Module):
    """ShuffleNetV1 for 32x32 inputs (1x1 stem, no max-pool).

    Args:
        out_channels: the three stage widths.
        blocks_per_stage: blocks per stage.
        groups: group count of the 1x1 convs.
        num_classes: classifier outputs.

    ``features["feats"]``: stem and the three stage outputs; ``"preact_feats"``: the same before
    the last ReLU; ``"pooled_feat"``: ``[B, out_channels[2]]``.
    """

    def __init__(
        self,
        out_channels: tuple[int, int, int] = (240, 480, 960),
        blocks_per_stage: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages = []
        for channels, count in zip(out_channels, blocks_per_stage):
            # The first block concatenates its input: its own branch makes the difference.
            blocks = [Bottleneck(in_channels, channels - in_channels, 2, groups)]
            blocks += [Bottleneck(channels, channels, 1, groups) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        pooled, features = staged_features(F.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        return self.linear(pooled), features


def ShuffleV1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes)
