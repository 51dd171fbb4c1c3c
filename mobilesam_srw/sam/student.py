"""Student image encoders: MobileSAM's TinyViT on timm, or any timm backbone, plus SAM's neck.

Every student maps a normalised, padded ``[B, 3, S, S]`` image to a ``[B, 256, S/s, S/s]``
embedding, ``s`` being its output stride: 16 (SAM's patch, the default) for teachers of
SAM's layout (1024 px -> 64 x 64), or 4 or 8 to meet a teacher's grid from a smaller input
(LiteMedSAM: 256 px -> 64 x 64 is stride 4). The teacher's prompt encoder and mask decoder
run on it unchanged.

| name | backbone | how it reaches stride 4 or 8 |
|---|---|---|
| ``tinyvit-5m`` | MobileSAM's TinyViT (5.7 M parameters) | its patch mergings before stages 1 and 2 keep the resolution |
| ``tinyvit-micro`` | a small TinyViT (1.2 M) for tests, the demo and CPU experiments | likewise |
| ``timm:<name>`` | any timm model with ``features_only`` | its stride-16 (or deepest) features, upsampled and concatenated with its features at the stride (a one-level FPN) |
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
from mobilesam_srw.sam.transforms import EMBEDDING_DIM, INPUT_SIZE, PATCH_SIZE

TINYVIT_STRIDES = (4, 8, 16)  # stem /4, then patch mergings /2 before stages 1 and 2 (stage 3's is /1)


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
        backbone: maps ``[B, 3, S, S]`` to ``[B, C, S/stride, S/stride]`` (finer maps are pooled by
            area, coarser ones upsampled bilinearly).
        backbone_channels: C.
        img_size: the square input size S (``SamPredictor`` reads ``image_encoder.img_size``).
        name: the registry name, kept in checkpoints.
        stride: input pixels per embedding cell on a side (SAM's 16 by default).
    """

    def __init__(self, backbone: nn.Module, backbone_channels: int, img_size: int, name: str,
                 stride: int = PATCH_SIZE) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = sam_neck(backbone_channels)
        self.img_size = img_size
        self.name = name
        self.stride = stride

    @property
    def grid(self) -> int:
        """Embedding cells on a side: ``img_size / stride``."""
        return self.img_size // self.stride

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return (EMBEDDING_DIM, self.grid, self.grid)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        side = self.grid
        if features.shape[-1] > side:
            features = F.adaptive_avg_pool2d(features, side)
        elif features.shape[-1] < side:
            features = F.interpolate(features, size=(side, side), mode="bilinear", align_corners=False)
        return self.neck(features)


@torch.no_grad()
def match_output_statistics(student: SamStudent, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Start the student's output at the teacher's per-channel scale: the neck's last LayerNorm2d
    (weight, bias) becomes (``std``, ``mean``), each ``[256]``.

    SAM's neck ends in a LayerNorm2d whose output has unit scale across channels; a teacher whose
    embeddings are far from that scale (LiteMedSAM's are ~0.1) would otherwise spend its first
    hundreds of steps shrinking one weight vector.
    """
    norm = student.neck[-1]
    norm.weight.copy_(std.to(norm.weight))
    norm.bias.copy_(mean.to(norm.bias))


class _TinyVitTrunk(nn.Module):
    """timm's TinyVit without its classifier head: patch embedding and stages only.

    Args:
        config: the architecture.
        stride: output stride, one of :data:`TINYVIT_STRIDES`; below 16 the patch merging before
            stage 2 (stride 8), then also the one before stage 1 (stride 4), keep the resolution.
    """

    def __init__(self, config: TinyVitConfig, stride: int = PATCH_SIZE) -> None:
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
        factor = PATCH_SIZE // stride  # 1, 2 or 4: how much finer than MobileSAM's stride 16
        for stage in (model.stages[2], model.stages[1]):  # the last stride-2 merging first
            if factor > 1:
                stage.downsample.conv2.conv.stride = (1, 1)
                factor //= 2
        self.patch_embed = model.patch_embed
        self.stages = model.stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(images))

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, NCHW (at stride 16: strides 4, 8, 16, 16), for multi-level students."""
        outputs, features = [], self.patch_embed(images)
        for stage in self.stages:
            features = stage(features)
            outputs.append(features)
        return outputs


def timm_feature_strides(name: str) -> list[int]:
    """The strides (reductions) of a timm backbone's ``features_only`` maps, or one line why it has none."""
    try:
        probe = timm.create_model(name, pretrained=False, features_only=True)
    except Exception as error:  # unknown name, or no features_only support
        raise SrwError(f"timm backbone {name!r} cannot be built with features_only: {error}") from None
    return list(probe.feature_info.reduction())


class _TimmFeatures(nn.Module):
    """The deepest feature map of a timm backbone at stride <= 16; for a finer output stride,
    that map upsampled (bilinear) to the grid of the backbone's features at the stride and
    concatenated with them (a one-level FPN).

    Args:
        name: the timm model name.
        stride: output stride.
    """

    def __init__(self, name: str, stride: int = PATCH_SIZE) -> None:
        super().__init__()
        reductions = timm_feature_strides(name)
        deep = max(i for i, reduction in enumerate(reductions) if reduction <= PATCH_SIZE)
        indices = (deep,)
        if reductions[deep] > stride:
            fine = [i for i, reduction in enumerate(reductions) if reduction <= stride]
            if not fine:
                raise SrwError(f"timm backbone {name!r} has no features at stride {stride} (its strides: {reductions})")
            indices = (fine[-1], deep)
        self.model = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices)
        self.channels = sum(self.model.feature_info.channels())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        *fine, deep = self.model(images)
        if not fine:
            return deep
        upsampled = F.interpolate(deep, size=fine[0].shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([fine[0], upsampled], dim=1)


def build_student(name: str, img_size: int = INPUT_SIZE, stride: int = PATCH_SIZE) -> SamStudent:
    """``tinyvit-5m`` (MobileSAM), ``tinyvit-micro`` (tests, demo), or ``timm:<model name>``.

    Args:
        name: the registry name (see the module docstring).
        img_size: the square input size S.
        stride: the output stride: the embedding is ``S / stride`` on a side (TinyViT: 4, 8 or 16).
    """
    if stride < 1 or img_size % stride:
        raise SrwError(f"student input size must be a multiple of its stride {stride}, got {img_size}")
    if name in TINYVIT_CONFIGS:
        if stride not in TINYVIT_STRIDES:
            raise SrwError(f"TinyViT students have output stride {', '.join(map(str, TINYVIT_STRIDES))}, not {stride}")
        config = TINYVIT_CONFIGS[name]
        return SamStudent(_TinyVitTrunk(config, stride), config.embed_dims[-1], img_size, name, stride)
    if name.startswith("timm:"):
        backbone = _TimmFeatures(name[len("timm:"):], stride)
        return SamStudent(backbone, backbone.channels, img_size, name, stride)
    raise SrwError(f"unknown student {name!r}; expected one of {', '.join(TINYVIT_CONFIGS)} or timm:<model name>")


def student_stride(input_size: int, grid: int) -> int:
    """The output stride that gives a ``grid x grid`` embedding from an ``input_size`` input; one line if none."""
    if input_size % grid:
        raise SrwError(f"a {input_size}-px student cannot give the teacher's {grid} x {grid} grid: "
                       f"{input_size} is not a multiple of {grid}")
    return input_size // grid
