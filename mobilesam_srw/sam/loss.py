"""The SAM distillation loss: patch-wise SRW-weighted MSE of image embeddings (Section 4.3).

Weights are computed per image over its own patches only: "image patches from
different images do not affect each other".
"""

from __future__ import annotations

import torch

from mobilesam_srw.losses import feature_mse
from mobilesam_srw.srw import average_similarity, reweighted_mean, srw_weights


def patch_weights(
    avesim: torch.Tensor, tau: float, normalizer: str, valid_patches: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, N]`` weights of each image's N patches (Eq. 5, or an ablation normalizer).

    With ``valid_patches`` (``--ignore-padding``), patches that lie only on SAM's padding get
    weight 0 and the others are renormalised to sum to 1. For ``softmax`` this is exactly
    Eq. 5 over the image's own patches; the stored avesim still averages over all patches.
    """
    weights = srw_weights(avesim, tau, normalizer)
    if valid_patches is None:
        return weights
    weights = weights * valid_patches
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


def embedding_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    tau: float,
    normalizer: str = "softmax",
    avesim: torch.Tensor | None = None,
    valid_patches: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 per image over ``H*W`` patches, then the batch mean.

    Args:
        student: ``[B, C, H, W]`` student embeddings.
        teacher: ``[B, C, H, W]`` teacher embeddings.
        tau: SRW temperature.
        normalizer: ``softmax`` (SRW), ``uniform`` (plain MSE, MobileSAM), ``reverse``, ``sum``.
        avesim: ``[B, H*W]`` stored average similarities; computed from ``teacher`` when None.
        valid_patches: ``[B, H*W]`` bool, see :func:`patch_weights`.

    Returns:
        The scalar loss and the ``[B, H*W]`` weights used.
    """
    if avesim is None:
        avesim = average_similarity(teacher.flatten(2).transpose(1, 2))
    weights = patch_weights(avesim, tau, normalizer, valid_patches)
    return reweighted_mean(feature_mse(student, teacher, dim=1), weights), weights
