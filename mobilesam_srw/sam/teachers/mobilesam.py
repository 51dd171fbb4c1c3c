"""MobileSAM (``vit_t``) as a teacher: its TinyViT-5M image encoder on timm (our ``tinyvit-5m`` student with
MobileSAM's weights, :mod:`mobilesam_srw.sam.mobilesam_format`), SAM's prompt encoder and mask decoder, SAM's
1024 px input and preprocessing."""

from __future__ import annotations

from torch import nn

from mobilesam_srw.sam.mobilesam_format import load_mobilesam_into
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.teachers.spec import StateDict, TeacherSpec
from mobilesam_srw.sam.transforms import EMBEDDING_DIM, INPUT_SIZE, PATCH_SIZE

STEM_KEY = "image_encoder.patch_embed.seq.0.c.weight"  # TinyViT's first stem conv in MobileSAM's layout


def has_tinyvit_stem(state_dict: StateDict, kernel: tuple[int, int]) -> bool:
    """Whether a SAM-layout state dict has a TinyViT image encoder whose first stem conv is ``kernel``."""
    stem = state_dict.get(STEM_KEY)
    return stem is not None and tuple(stem.shape[-2:]) == kernel


def _recognizes(state_dict: StateDict) -> bool:
    return has_tinyvit_stem(state_dict, (3, 3))


def _build_encoder(state_dict: StateDict) -> nn.Module:
    encoder = build_student("tinyvit-5m", INPUT_SIZE)  # MobileSAM's image encoder on timm
    load_mobilesam_into(encoder, state_dict)
    return encoder.eval()


VIT_T = TeacherSpec("vit_t", INPUT_SIZE, (EMBEDDING_DIM, INPUT_SIZE // PATCH_SIZE, INPUT_SIZE // PATCH_SIZE), "sam",
                    "mobile_sam.pt", "MobileSAM (TinyViT-5M)", _recognizes, _build_encoder, sam_family=True)
