"""VGG-8/11/13/16/19 with batch norm for CIFAR, mdistiller's ``vgg.py`` layout.

Five blocks of 3x3 conv (with bias) + BN (+ ReLU except after a block's last BN), max-pools
between blocks, global average pool, one linear layer. Parameter names:
``block{0..4}.{3j}.{weight,bias}`` (conv j), ``block{0..4}.{3j+1}.*`` (its BN), ``classifier``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Conv widths per block; the names follow Simonyan & Zisserman's configurations ("S" is VGG-8).
CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    """conv-BN-ReLU per width, without the last ReLU (so a block's output is pre-activation)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """VGG with BN for 32x32 (or 64x64) inputs.

    Args:
        config: conv widths per block, e.g. ``CONFIGS["vgg13"]``.
        num_classes: classifier outputs.

    ``features["feats"]``: the five block outputs after ReLU; ``"preact_feats"``: before it (block 0
    repeated after ReLU, as in mdistiller); ``"pooled_feat"``: ``[B, 512]``. As in mdistiller, the
    max-pool after block 3 runs only for 64 px inputs (Tiny-ImageNet), so a 32 px input keeps 2x2.
    """

    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int = 100) -> None:
        super().__init__()
        in_channels = [3] + [widths[-1] for widths in config[:-1]]
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _block(widths, channels) for widths, channels in zip(config, in_channels)
        )
        self.classifier = nn.Linear(config[-1][-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        input_size = x.shape[2]
        f0 = F.relu(self.block0(x))
        p1 = self.block1(F.max_pool2d(f0, 2))
        f1 = F.relu(p1)
        p2 = self.block2(F.max_pool2d(f1, 2))
        f2 = F.relu(p2)
        p3 = self.block3(F.max_pool2d(f2, 2))
        f3 = F.relu(p3)
        p4 = self.block4(F.max_pool2d(f3, 2) if input_size == 64 else f3)
        f4 = F.relu(p4)
        pooled = F.adaptive_avg_pool2d(f4, 1).flatten(1)
        features = {"feats": [f0, f1, f2, f3, f4], "preact_feats": [f0, p1, p2, p3, p4], "pooled_feat": pooled}
        return self.classifier(pooled), features


def _vgg(name: str):
    def build(num_classes: int = 100) -> VGG:
        return VGG(CONFIGS[name], num_classes)

    build.__name__ = name
    return build


vgg8 = _vgg("vgg8")
vgg11 = _vgg("vgg11")
vgg13 = _vgg("vgg13")
vgg16 = _vgg("vgg16")
vgg19 = _vgg("vgg19")
