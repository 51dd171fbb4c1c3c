"""How a teacher's own inference maps prompts from original-image pixels into its input frame.

Every teacher resizes the image so its longest side is its input size S; prompts given in the original
image's pixels move into that frame by the teacher's own convention, named in its registry entry
(:attr:`~mobilesam_srw.sam.teachers.spec.TeacherSpec.box_prompts`):

- ``sam`` (SAM ViT-H/L/B, MobileSAM, the tiny teacher): segment-anything's ``ResizeLongestSide``:
  coordinates scaled by ``new_w / W`` and ``new_h / H`` (the resized size rounded), kept as floats.
- ``medsam`` (LiteMedSAM): ``resize_box_to_256`` of MedSAM's ``CVPR24_LiteMedSAM_infer.py`` (branch
  ``LiteMedSAM``): each box coordinate times ``S / max(H, W)``, truncated to an integer (``int()``).
  The masks then equal the reference's for the same boxes (float boxes move them to IoU 0.88-0.94).

Points (clicks) follow ``ResizeLongestSide`` for every teacher (LiteMedSAM's inference takes boxes only).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw.errors import SrwError

SAM_BOXES, MEDSAM_BOXES = "sam", "medsam"
BOX_PROMPTS = (SAM_BOXES, MEDSAM_BOXES)


def check_box_prompts(name: str) -> str:
    if name not in BOX_PROMPTS:
        raise SrwError(f"unknown box-prompt convention {name!r}; expected one of {', '.join(BOX_PROMPTS)}")
    return name


def medsam_boxes(boxes: np.ndarray, original_size: tuple[int, int], input_size: int) -> np.ndarray:
    """``[N, 4]`` XYXY boxes in original pixels -> the teacher's frame as MedSAM's ``resize_box_to_256``
    maps them: ``int(coordinate * S / max(H, W))`` (truncation; boxes inside the image are >= 0)."""
    return np.trunc(np.asarray(boxes, dtype=np.float64) * (input_size / max(original_size)))


class PromptTransform(ResizeLongestSide):
    """segment-anything's ``ResizeLongestSide`` with a teacher's own image resize and box convention.

    ``SamPredictor`` (and so :class:`~mobilesam_srw.sam.predictor.EmbeddingPredictor`) maps every prompt
    through its ``transform``; this one maps boxes as the teacher's inference does.

    Args:
        input_size: the teacher's input size S.
        box_prompts: ``sam`` or ``medsam`` (:data:`BOX_PROMPTS`).
        resize: the teacher's image resize (default ``ResizeLongestSide``'s).
    """

    def __init__(self, input_size: int, box_prompts: str = SAM_BOXES,
                 resize: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(input_size)
        self.box_prompts = check_box_prompts(box_prompts)
        self.resize = resize

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return self.resize(image) if self.resize is not None else super().apply_image(image)

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        if self.box_prompts == MEDSAM_BOXES:
            return medsam_boxes(boxes, original_size, self.target_length)
        return super().apply_boxes(boxes, original_size)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        if self.box_prompts == MEDSAM_BOXES:
            return torch.trunc(boxes.double() * (self.target_length / max(original_size))).to(boxes.dtype)
        return super().apply_boxes_torch(boxes, original_size)


def prompt_transform(sam: Sam, resize: Callable[[np.ndarray], np.ndarray] | None = None) -> PromptTransform:
    """The prompt transform of a ``Sam`` built from a teacher's registry entry (its ``box_prompts``, set by
    :func:`~mobilesam_srw.sam.teachers.loading.assemble`; segment-anything's own for any other ``Sam``)."""
    return PromptTransform(sam.image_encoder.img_size, getattr(sam, "box_prompts", SAM_BOXES), resize)
