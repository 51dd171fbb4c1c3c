"""Students of SAM 2 teachers: a backbone at strides 4, 8 and 16 and a small top-down neck that give the
three maps ``SAM2ImagePredictor`` feeds its mask decoder (:mod:`~mobilesam_srw.sam.teachers.sam2`).

Input: the image as ``SAM2Transforms`` gives it (1024 x 1024, ImageNet mean and std). Outputs:

- ``image_embed`` ``[B, 256, 64, 64]``: SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) on the
  stride-16 features; its last LayerNorm's bias also learns the teacher's ``no_mem_embed``;
- ``high_res_1`` ``[B, 64, 128, 128]``: a 1x1 conv of the stride-8 features plus a 1x1 conv of the
  embedding upsampled x2 (nearest);
- ``high_res_0`` ``[B, 32, 256, 256]``: likewise from the stride-4 features and ``high_res_1``.

| name | backbone |
|---|---|
| ``tinyvit-5m``, ``tinyvit-micro`` | MobileSAM's TinyViT (:mod:`~mobilesam_srw.sam.student`): stage outputs at strides 4, 8, 16 |
| ``timm:<name>`` | any timm model with ``features_only`` and features at strides 4 and 8 (its deepest at <= 16) |

The neck is ours (defaults documented as ours in docs/sam2.md), not SAM 2's FPN.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.student import TINYVIT_CONFIGS, _TinyVitTrunk, sam_neck, timm_feature_strides
from mobilesam_srw.sam.teachers.sam2 import EMBEDDING_SHAPE, HIGH_RES_MAPS, INPUT_SIZE

FAMILY = "sam2"  # the student record's ``family``
LEVEL_STRIDES = (4, 8, 16)
OUTPUT_NAMES = ("image_embed", *(name for name, _ in HIGH_RES_MAPS))


class _TinyVitLevels(nn.Module):
    """MobileSAM's TinyViT: the outputs of stage 0 (stride 4), stage 1 (8) and the last stage (16)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        config = TINYVIT_CONFIGS[name]
        self.trunk = _TinyVitTrunk(config)
        self.channels = (config.embed_dims[0], config.embed_dims[1], config.embed_dims[-1])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels = self.trunk.levels(images)
        return [levels[0], levels[1], levels[-1]]


class _TimmLevels(nn.Module):
    """A timm backbone's features at strides 4, 8 and its deepest at <= 16."""

    def __init__(self, name: str) -> None:
        super().__init__()
        reductions = timm_feature_strides(name)
        missing = [stride for stride in LEVEL_STRIDES[:2] if stride not in reductions]
        if missing or min(reductions) > LEVEL_STRIDES[-1]:
            raise SrwError(f"timm backbone {name!r} has no features at stride {missing or [16]} (its strides: "
                           f"{reductions}); a SAM 2 student needs strides 4, 8 and 16")
        deep = max(i for i, reduction in enumerate(reductions) if reduction <= LEVEL_STRIDES[-1])
        indices = (reductions.index(4), reductions.index(8), deep)
        self.model = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices)
        self.channels = tuple(self.model.feature_info.channels())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model(images)


def _resized(features: torch.Tensor, side: int) -> torch.Tensor:
    if features.shape[-1] > side:
        return F.adaptive_avg_pool2d(features, side)
    if features.shape[-1] < side:
        return F.interpolate(features, size=(side, side), mode="bilinear", align_corners=False)
    return features


class Sam2Student(nn.Module):
    """A backbone of three levels and the neck of the module docstring; outputs ``(image_embed, high_res_0,
    high_res_1)``.

    Args:
        backbone: ``[B, 3, S, S]`` -> features at strides 4, 8, 16 (``channels`` of them).
        name: the registry name, kept in checkpoints.
        img_size: the square input S (SAM 2's 1024).
    """

    family = FAMILY
    stride = INPUT_SIZE // EMBEDDING_SHAPE[-1]

    def __init__(self, backbone: nn.Module, name: str, img_size: int = INPUT_SIZE) -> None:
        super().__init__()
        fine, middle, coarse = backbone.channels
        (_, (channels_0, *_)), (_, (channels_1, *_)) = HIGH_RES_MAPS
        self.backbone = backbone
        self.neck = sam_neck(coarse)  # named as SamStudent's, so match_output_statistics applies
        self.lateral_1 = nn.Conv2d(middle, channels_1, kernel_size=1)
        self.top_down_1 = nn.Conv2d(EMBEDDING_SHAPE[0], channels_1, kernel_size=1)
        self.lateral_0 = nn.Conv2d(fine, channels_0, kernel_size=1)
        self.top_down_0 = nn.Conv2d(channels_1, channels_0, kernel_size=1)
        self.name = name
        self.img_size = img_size

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return EMBEDDING_SHAPE

    @property
    def map_shapes(self) -> dict[str, tuple[int, int, int]]:
        return dict(HIGH_RES_MAPS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fine, middle, coarse = self.backbone(images)
        side = EMBEDDING_SHAPE[-1]
        embed = self.neck(_resized(coarse, side))
        up = F.interpolate(embed, scale_factor=2.0, mode="nearest")
        high_res_1 = self.lateral_1(_resized(middle, 2 * side)) + self.top_down_1(up)
        up = F.interpolate(high_res_1, scale_factor=2.0, mode="nearest")
        high_res_0 = self.lateral_0(_resized(fine, 4 * side)) + self.top_down_0(up)
        return embed, high_res_0, high_res_1


def build_sam2_student(name: str, img_size: int = INPUT_SIZE) -> Sam2Student:
    """``tinyvit-5m``, ``tinyvit-micro`` or ``timm:<model name>`` with the SAM 2 neck, at SAM 2's input."""
    if img_size != INPUT_SIZE:
        raise SrwError(f"a SAM 2 student takes SAM 2's {INPUT_SIZE} px input (its maps are 64, 128 and 256 on a "
                       f"side), not {img_size}")
    if name in TINYVIT_CONFIGS:
        return Sam2Student(_TinyVitLevels(name), name, img_size)
    if name.startswith("timm:"):
        return Sam2Student(_TimmLevels(name[len("timm:"):]), name, img_size)
    raise SrwError(f"unknown student {name!r}; expected one of {', '.join(TINYVIT_CONFIGS)} or timm:<model name>")
