"""ImageNet models: torchvision's ResNet18/34/50 and mdistiller's MobileNetV1, with the output contract.

The ResNets *are* torchvision's (a subclass that only replaces ``forward``), so torchvision's
weight files and mdistiller's ImageNet teachers (the same files) load strictly. MobileNetV1
keeps mdistiller's layout: ``model.{0..13}`` (``model.0``: conv-BN-ReLU; ``model.k``:
depthwise conv ``.0``, BN ``.1``, pointwise conv ``.3``, BN ``.4``), ``fc``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet


class ImageNetResNet(tv_resnet.ResNet):
    """torchvision's ResNet whose forward returns ``(logits, features)``.

    ``features["feats"]``: the stem (after BN-ReLU, before the max-pool) and the four stage
    outputs, all after ReLU, as mdistiller's ImageNet ResNet; ``"pooled_feat"``: ``[B, 512 * expansion]``.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        pooled = self.avgpool(f4).flatten(1)
        return self.fc(pooled), {"feats": [stem, f1, f2, f3, f4], "pooled_feat": pooled}


def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def resnet34(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(tv_resnet.BasicBlock, [3, 4, 6, 3], num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# (output channels, stride) of the 13 depthwise-separable blocks after the stem.
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """MobileNetV1 (width 1.0) for 224 px inputs.

    ``features["feats"]``: outputs of blocks 3, 5, 11 and 13 (128, 256, 512, 1024 channels),
    after ReLU; ``"preact_feats"``: the same before their last ReLU; ``"pooled_feat"``: ``[B, 1024]``.
    """

    FEATURE_BLOCKS = (3, 5, 11, 13)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers = [_conv_bn_relu(3, 32, 2)]
        in_channels = 32
        for out_channels, stride in MOBILENET_V1_BLOCKS:
            layers.append(_depthwise_separable(in_channels, out_channels, stride))
            in_channels = out_channels
        layers.append(nn.AdaptiveAvgPool2d(1))  # mdistiller: AvgPool2d(7) on the 7x7 map; no parameters
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        feats, preacts = [], []
        start = 0
        for end in self.FEATURE_BLOCKS:
            # Blocks up to `end`, without the last block's final ReLU.
            preact = self.model[end][:-1](self.model[start:end](x))
            x = F.relu(preact)
            preacts.append(preact)
            feats.append(x)
            start = end + 1
        pooled = self.model[14](x).flatten(1)
        return self.fc(pooled), {"feats": feats, "preact_feats": preacts, "pooled_feat": pooled}
