"""Student image encoders: MobileSAM's TinyViT on timm, or any timm backbone, plus SAM's neck.

Every student maps a normalised, padded ``[B, 3, S, S]`` image to a ``[B, 256, S/16, S/16]``
embedding, the shape of SAM's image embedding, so SAM's prompt encoder and mask decoder
run on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from timm.models.tiny_vit import TinyVit
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.transforms import PATCH_SIZE

EMBEDDING_DIM = 256


@dataclass(frozen=True)
class TinyVitConfig:
    """A TinyViT as MobileSAM configures it (its ``build_sam_vit_t``).

    Args:
        embed_dims: channels of the four stages.
        depths: blocks per stage.
        num_heads: attention heads per stage (stages 1-3; stage 0 is convolutional).
        window_sizes: attention windows per stage.
    """

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)


TINYVIT_CONFIGS: dict[str, TinyVitConfig] = {
    "tinyvit-5m": TinyVitConfig(),  # MobileSAM's image encoder
    "tinyvit-micro": TinyVitConfig((32, 64, 80, 160), (1, 1, 2, 1), (1, 2, 2, 5), (7, 7, 14, 7)),  # tests, demo
}


def sam_neck(in_channels: int) -> nn.Sequential:
    """SAM's encoder neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (no biases)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, EMBEDDING_DIM, kernel_size=1, bias=False),
        LayerNorm2d(EMBEDDING_DIM),
        nn.Conv2d(EMBEDDING_DIM, EMBEDDING_DIM, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(EMBEDDING_DIM),
    )


class SamStudent(nn.Module):
    """A backbone and SAM's neck; a drop-in ``image_encoder`` for ``segment_anything.Sam``.

    Args:
        backbone: maps ``[B, 3, S, S]`` to ``[B, C, S/16, S/16]`` (or finer; resized by area).
        backbone_channels: C.
        img_size: the square input size S (``SamPredictor`` reads ``image_encoder.img_size``).
        name: the registry name, kept in checkpoints.
    """

    def __init__(self, backbone: nn.Module, backbone_channels: int, img_size: int, name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = sam_neck(backbone_channels)
        self.img_size = img_size
        self.name = name

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        side = self.img_size // PATCH_SIZE
        return (EMBEDDING_DIM, side, side)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        side = self.img_size // PATCH_SIZE
        if features.shape[-2:] != (side, side):
            features = F.adaptive_avg_pool2d(features, side)
        return self.neck(features)


class _TinyVitTrunk(nn.Module):
    """timm's TinyVit without its classifier head: patch embedding and stages only."""

    def __init__(self, config: TinyVitConfig) -> None:
        super().__init__()
        model = TinyVit(
            num_classes=0,
            embed_dims=config.embed_dims,
            depths=config.depths,
            num_heads=config.num_heads,
            window_sizes=config.window_sizes,
            drop_path_rate=0.0,
        )
        # MobileSAM keeps stride 16: the last patch merging does not downsample.
        model.stages[-1].downsample.conv2.conv.stride = (1, 1)
        self.patch_embed = model.patch_embed
        self.stages = model.stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(images))


class _TimmFeatures(nn.Module):
    """The deepest feature map of a timm backbone at stride <= 16."""

    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except Exception as error:  # unknown name, or no features_only support
            raise SrwError(f"timm backbone {name!r} cannot be built with features_only: {error}") from None
        reductions = probe.feature_info.reduction()
        index = max(i for i, reduction in enumerate(reductions) if reduction <= PATCH_SIZE)
        self.model = timm.create_model(name, pretrained=False, features_only=True, out_indices=(index,))
        self.channels = self.model.feature_info.channels()[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[-1]


def build_student(name: str, img_size: int = 1024) -> SamStudent:
    """``tinyvit-5m`` (MobileSAM), ``tinyvit-micro`` (tests), or ``timm:<model name>``."""
    if img_size % PATCH_SIZE:
        raise SrwError(f"student input size must be a multiple of {PATCH_SIZE}, got {img_size}")
    if name in TINYVIT_CONFIGS:
        config = TINYVIT_CONFIGS[name]
        return SamStudent(_TinyVitTrunk(config), config.embed_dims[-1], img_size, name)
    if name.startswith("timm:"):
        backbone = _TimmFeatures(name[len("timm:"):])
        return SamStudent(backbone, backbone.channels, img_size, name)
    raise SrwError(f"unknown student {name!r}; expected one of {', '.join(TINYVIT_CONFIGS)} or timm:<model name>")
