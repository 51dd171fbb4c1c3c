"""The SAM 2 distillation objective: its options (part of ``srw-sam train``'s) and its terms.

A SAM 2 teacher gives three maps (:mod:`~mobilesam_srw.sam.teachers.sam2`). The 64 x 64 embedding is
distilled as SAM's is (Section 4.3): the per-patch MSE over the 256 channels (Eq. 2), re-weighted by
SRW over each image's 4096 patches (Eq. 4-6, avesim stored by precompute). The high-resolution maps
(32 x 256 x 256, 64 x 128 x 128) add their per-pixel MSE over channels, each with a weight:

- ``--high-res-loss srw`` (ours, the default): each map's per-pixel MSE averaged over the pixels of
  each 16 x 16 input patch (4 x 4 of the 256 map, 2 x 2 of the 128 map) and added to that patch's loss,
  so the patch's SRW weight covers all three maps; with ``--loss mse`` every patch weighs the same.
- ``--high-res-loss mse``: the plain mean over each map, unweighted (the baseline's form).

The weights 1.0 and 1.0 are ours; the paper distils SAM, which has no such maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from mobilesam_srw.losses import feature_mse
from mobilesam_srw.options import option

HIGH_RES_LOSSES = ("srw", "mse")


@dataclass(kw_only=True)
class Sam2LossOptions:
    """The options of the high-resolution terms (used with SAM 2 teachers' shards only)."""

    SAM2_RUN_FIELDS: ClassVar[tuple[str, ...]] = ("high_res_loss", "high_res_0_weight", "high_res_1_weight")

    high_res_loss: str = option("srw", choices=HIGH_RES_LOSSES,
                                help="SAM 2 teachers: srw (ours): the high-resolution maps' MSE pooled onto the "
                                     "16 px patches and weighted with the embedding's patches; mse: their plain mean")
    high_res_0_weight: float = option(1.0, minimum=0, help="SAM 2 teachers: weight of the 32x256x256 map's MSE "
                                                           "(ours: 1)")
    high_res_1_weight: float = option(1.0, minimum=0, help="SAM 2 teachers: weight of the 64x128x128 map's MSE "
                                                           "(ours: 1)")


def pixel_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H, W]``: the squared error averaged over channels (Eq. 2 per pixel)."""
    return feature_mse(student, teacher, dim=1).view(student.shape[0], *student.shape[2:])


def sam2_terms(predicted: tuple[torch.Tensor, ...], targets: dict[str, torch.Tensor], options: Sam2LossOptions
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The terms of one batch.

    Args:
        predicted: the student's ``(image_embed, high_res_0, high_res_1)``.
        targets: ``embedding``, ``high_res_0`` and ``high_res_1`` of the batch.
        options: the weights and the form of the high-resolution terms.

    Returns:
        the per-patch distillation loss ``[B, 4096]`` (SRW-weighted by the engine), the plain extras ``[B]``
        (``--high-res-loss mse``) and per-sample metrics ``[B]`` (each map's plain MSE).
    """
    embed, *high_res = predicted
    distill = feature_mse(embed, targets["embedding"], dim=1)  # [B, H*W], Eq. 2
    side = embed.shape[-1]
    extra, metrics = {}, {"mse_embedding": distill.mean(dim=1).detach()}
    weights = (options.high_res_0_weight, options.high_res_1_weight)
    for index, (student_map, weight) in enumerate(zip(high_res, weights)):
        name = f"high_res_{index}"
        per_pixel = pixel_mse(student_map, targets[name])  # [B, h, w]
        metrics[f"mse_{name}"] = per_pixel.flatten(1).mean(dim=1).detach()
        if options.high_res_loss == "srw":
            per_patch = F.adaptive_avg_pool2d(per_pixel[:, None], side)[:, 0]  # pixels of each 16 px patch
            distill = distill + weight * per_patch.flatten(1)
        else:
            extra[name] = weight * per_pixel.flatten(1).mean(dim=1)
    return distill, extra, metrics
