"""ShuffleNetV2 (width 1x) for CIFAR, mdistiller's ``ShuffleV2`` layout.

Parameter names: ``conv1, bn1``; per stage ``layer{k}.0`` the down-sampling block
(``conv1..conv5, bn1..bn5``) and ``layer{k}.{i}`` the split blocks (``conv1..conv3, bn1..bn3``);
``conv2, bn2, linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilesam_srw.cls.models.shufflenet_v1 import channel_shuffle

# Stage widths and head width (index 3), blocks per stage, of the 1x model.
WIDTHS = (116, 232, 464, 1024)
BLOCKS = (3, 7, 3)


class SplitBlock(nn.Module):
    """Keeps half the channels, transforms the other half (1x1, depthwise 3x3, 1x1), concatenates, shuffles.

    ``forward`` returns ``(out, preact)``; ``preact`` is the concatenation before the last ReLU, unshuffled.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = x.shape[1] // 2
        kept, transformed = x[:, :half], x[:, half:]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(transformed)))))
        branch_preact = self.bn3(self.conv3(out))
        out = channel_shuffle(torch.cat([kept, F.relu(branch_preact)], dim=1), 2)
        return out, torch.cat([kept, branch_preact], dim=1)


class DownBlock(nn.Module):
    """Stride-2 block: two branches, each ending at half the output width, concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 for 32x32 inputs (1x1 stem, no max-pool).

    Args:
        widths: three stage widths and the head width.
        blocks_per_stage: split blocks per stage (after its down-sampling block).
        num_classes: classifier outputs.

    ``features["feats"]``: stem and the three stage outputs; ``"preact_feats"``: stem and each
    stage's last split block before its ReLU; ``"pooled_feat"``: ``[B, widths[3]]``.
    """

    def __init__(
        self, widths: tuple[int, ...] = WIDTHS, blocks_per_stage: tuple[int, ...] = BLOCKS, num_classes: int = 100
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages = []
        for channels, count in zip(widths[:3], blocks_per_stage):
            stages.append(
                nn.Sequential(DownBlock(in_channels, channels), *[SplitBlock(channels) for _ in range(count)])
            )
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(in_channels, widths[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    @staticmethod
    def _stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = stage[0](x)
        preact = x
        for block in stage[1:]:
            x, preact = block(x)
        return x, preact

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        stem = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = self._stage(self.layer1, stem)
        f2, p2 = self._stage(self.layer2, f1)
        f3, p3 = self._stage(self.layer3, f2)
        pooled = F.adaptive_avg_pool2d(F.relu(self.bn2(self.conv2(f3))), 1).flatten(1)
        features = {"feats": [stem, f1, f2, f3], "preact_feats": [stem, p1, p2, p3], "pooled_feat": pooled}
        return self.linear(pooled), features


def ShuffleV2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes)
