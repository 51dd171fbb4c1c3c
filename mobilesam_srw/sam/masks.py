"""Comparing masks: IoU, and one-to-one matching of two mask sets ("everything" mode, figures)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def mask_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks ``[..., h, w]`` -> ``[...]``; two empty masks have IoU 1."""
    # uint8 products and int32 sums: 3.5x faster on CPU than bool & / | with .sum()
    first, second = first.flatten(-2).to(torch.uint8), second.flatten(-2).to(torch.uint8)
    intersection = (first * second).sum(-1, dtype=torch.int32)
    return iou_from_counts(intersection, first.sum(-1, dtype=torch.int32), second.sum(-1, dtype=torch.int32))


def iou_from_counts(intersection: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """IoU from int32 pixel counts (intersection, each mask's area); two empty masks have IoU 1."""
    union = first + second - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones(union.shape, device=union.device))


def iou_matrix(first: torch.Tensor, second: torch.Tensor, chunk_pixels: int = 1 << 18) -> torch.Tensor:
    """``[A, h, w]`` and ``[B, h, w]`` bool masks -> ``[A, B]`` IoU (two empties: 1).

    Intersections are a matrix product, accumulated over chunks of pixels to bound memory.
    """
    if len(first) == 0 or len(second) == 0:
        return torch.zeros(len(first), len(second))
    a, b = first.flatten(1), second.flatten(1)
    intersection = torch.zeros(len(a), len(b))
    for start in range(0, a.shape[1], chunk_pixels):
        intersection += a[:, start : start + chunk_pixels].float() @ b[:, start : start + chunk_pixels].float().T
    union = a.sum(1)[:, None].float() + b.sum(1)[None, :].float() - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def match_one_to_one(ious: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (rows, cols) maximising the total IoU, each mask used at most once (Hungarian)."""
    if ious.numel() == 0:
        return np.zeros(0, int), np.zeros(0, int)
    return linear_sum_assignment(ious.numpy(), maximize=True)
