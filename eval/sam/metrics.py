"""Mask IoU, the pairing of multimask outputs, and avesim quartiles of prompts."""

from __future__ import annotations

import numpy as np
import torch

from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.transforms import PATCH_SIZE

MATCH_MODES = ("all", "teacher-best", "own-best")


def match_indices(teacher_scores: torch.Tensor, student_scores: torch.Tensor, match: str
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Which output of each prompt is paired, ``[N]`` teacher and student indices; None for ``all``
    (the M outputs index by index). ``teacher-best``: both take the index of the teacher's highest
    predicted IoU; ``own-best``: each takes its own best."""
    if match not in MATCH_MODES:
        raise ValueError(f"match: unknown {match!r}, expected one of {', '.join(MATCH_MODES)}")
    if match == "all":
        return None
    teacher_index = teacher_scores.argmax(dim=1)
    return teacher_index, teacher_index if match == "teacher-best" else student_scores.argmax(dim=1)


def paired_iou(
    teacher_masks: torch.Tensor,
    teacher_scores: torch.Tensor,
    student_masks: torch.Tensor,
    student_scores: torch.Tensor,
    match: str = "all",
) -> torch.Tensor:
    """IoU of student against teacher masks of each prompt, ``[N, M]`` masks -> ``[N, K]``
    (K = M for ``all``, else 1; see :func:`match_indices`)."""
    indices = match_indices(teacher_scores, student_scores, match)
    if indices is None:
        return mask_iou(teacher_masks, student_masks)
    rows = torch.arange(teacher_masks.shape[0], device=teacher_masks.device)
    teacher_index, student_index = indices
    return mask_iou(teacher_masks[rows, teacher_index], student_masks[rows, student_index])[:, None]


def image_patch_quartiles(avesim: np.ndarray, input_size: tuple[int, int], patch_size: int = PATCH_SIZE
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The quartile edges of the avesim of the patches that hold image pixels, and which patches those are.

    Args:
        avesim: ``[H, W]`` per-patch average similarity of the image.
        input_size: resized ``(h, w)`` in the teacher's input frame.
        patch_size: the teacher's input pixels per patch on a side (SAM: 16, LiteMedSAM: 4).

    Returns:
        ``[3]`` edges (25, 50, 75 %) and an ``[H, W]`` bool mask of the image's patches.
    """
    rows = min(avesim.shape[0], -(-input_size[0] // patch_size))
    cols = min(avesim.shape[1], -(-input_size[1] // patch_size))
    inside = np.zeros(avesim.shape, dtype=bool)
    inside[:rows, :cols] = True
    return np.quantile(avesim[inside], [0.25, 0.5, 0.75]), inside


def prompt_quartiles(points_input: np.ndarray, avesim: np.ndarray, input_size: tuple[int, int],
                     patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Quartile (0 = lowest avesim, the tail; 3 = highest) of the teacher patch under each prompt.

    Args:
        points_input: ``[N, 2]`` prompt ``(x, y)`` in the resized input frame.
        avesim: ``[H, W]`` per-patch average similarity of the image.
        input_size: resized ``(h, w)``; quartile edges use the patches that hold image pixels.
        patch_size: the teacher's input pixels per patch on a side (SAM: 16, LiteMedSAM: 4).
    """
    edges, _ = image_patch_quartiles(avesim, input_size, patch_size)
    patch_y = np.clip((points_input[:, 1] // patch_size).astype(int), 0, avesim.shape[0] - 1)
    patch_x = np.clip((points_input[:, 0] // patch_size).astype(int), 0, avesim.shape[1] - 1)
    return np.searchsorted(edges, avesim[patch_y, patch_x], side="right")
