"""CLIP image-encoder students: a timm backbone, average-pooled, with a linear projection to ``D``.

The student is open_clip's own ``TimmModel`` (``trunk`` = the timm model without its classifier,
``head.proj`` = the linear projection), the module open_clip builds from a vision config with
``timm_model_name``. So an exported student is an ordinary open_clip model (see ``export.py``).
It maps the teacher-normalised ``[B, 3, S, S]`` image to a ``[B, D]`` embedding, trained to match the
teacher's ``encode_image`` (Section 4.2 of the paper: TinyViT student, MSE on the image embeddings).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from open_clip.timm_model import TimmModel

from mobilesam_srw.errors import SrwError

TIMM_PREFIX = "timm:"

# student name -> timm model name (built with pretrained=False: nothing is downloaded)
CLIP_STUDENTS: dict[str, str] = {
    "tiny_vit_5m_224": "tiny_vit_5m_224",
    "tiny_vit_11m_224": "tiny_vit_11m_224",
    "tiny_vit_21m_224": "tiny_vit_21m_224",
}
DEFAULT_CLIP_STUDENT = "tiny_vit_5m_224"
PROJECTION_BIAS = True  # ours: the paper says "linear projection"; a bias lets it match the teacher's mean


def timm_model_name(name: str) -> str:
    """The timm model of a student name (a registry name or ``timm:<name>``)."""
    if name in CLIP_STUDENTS:
        return CLIP_STUDENTS[name]
    if name.startswith(TIMM_PREFIX):
        model_name = name[len(TIMM_PREFIX) :]
        if not timm.is_model(model_name):
            raise SrwError(f"timm has no model {model_name!r} (see timm.list_models())")
        return model_name
    raise SrwError(f"unknown CLIP student {name!r}; expected one of {', '.join(CLIP_STUDENTS)} or timm:<name>")


def clip_vision_cfg(name: str, image_size: int | tuple[int, int]) -> dict[str, Any]:
    """The open_clip ``vision_cfg`` that builds this student (what an export's config holds)."""
    return {
        "timm_model_name": timm_model_name(name),
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": "linear",
        "timm_proj_bias": PROJECTION_BIAS,
        "image_size": list(image_size) if isinstance(image_size, (tuple, list)) else image_size,
    }


def build_clip_student(name: str, embed_dim: int, image_size: int | tuple[int, int] = 224) -> TimmModel:
    """A randomly initialised student: timm backbone (no classifier), average pool, ``Linear(num_features, D)``.

    Args:
        name: ``tiny_vit_5m_224`` (default), ``tiny_vit_11m_224``, ``tiny_vit_21m_224``, or ``timm:<name>``.
        embed_dim: the teacher's embedding size ``D``.
        image_size: the teacher's input size ``S`` (TinyViT runs at other sizes than its name says;
            a ``timm:`` model fixed to another size is refused).

    Returns:
        open_clip's ``TimmModel`` in train mode: ``forward([B, 3, S, S]) -> [B, D]``; ``.trunk``, ``.head.proj``.
    """
    if embed_dim < 1:
        raise SrwError(f"embed_dim must be >= 1, got {embed_dim}")
    cfg = clip_vision_cfg(name, image_size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        student = TimmModel(
            cfg["timm_model_name"],
            embed_dim=embed_dim,
            image_size=cfg["image_size"],
            pool=cfg["timm_pool"],
            proj=cfg["timm_proj"],
            proj_bias=cfg["timm_proj_bias"],
            pretrained=False,
        )
        with torch.no_grad():  # a backbone fixed to another input size, or without a pooled head, fails here
            shape = tuple(student.eval()(torch.zeros(1, 3, height, width)).shape)
    except (RuntimeError, TypeError, ValueError, AttributeError, AssertionError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise SrwError(f"cannot build CLIP student {name} for {height}x{width} input: {first_line}") from None
    if shape != (1, embed_dim):
        raise SrwError(f"CLIP student {name} gives {list(shape)} for one image, not [1, {embed_dim}]")
    return student.train()
