"""Sample-wise Re-Weighting (SRW), Sections 3.2-3.3 of Yu et al., ACCV 2024.

The teacher's features say which items of a group (the samples of a batch, or the
patches of one image) lie in sparse regions of feature space: their average cosine
similarity to the group is low (Eq. 4). Their distillation loss then gets a larger
weight (Eq. 5), and the loss of the group is the weighted sum (Eq. 6).

Shapes: a *group* is the last item axis. Leading dims are independent groups,
e.g. ``[B, N, D]`` features give ``[B, N]`` similarities and weights, one group of
N patches per image.
"""

from __future__ import annotations

import math

import torch

NORMALIZERS = ("softmax", "reverse", "sum", "uniform")

# Norm floor for zero feature vectors: a zero vector has cosine 0 with everything.
_NORM_EPS = 1e-12


def _check_group(size: int, what: str) -> None:
    if size < 2:
        raise ValueError(f"{what}: a group needs at least 2 items to compare, got {size}")


def _check_mask(mask: torch.Tensor | None, shape: torch.Size, what: str) -> torch.Tensor | None:
    """``mask`` as a bool tensor of ``shape`` (the items that count), or one line naming the mismatch."""
    if mask is None:
        return None
    if mask.shape != shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match {what} {tuple(shape)}")
    return mask.bool()


def average_similarity(features: torch.Tensor, dim: int = -2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine similarity of each item with all items of its group, Eq. 4.

    ``avesim_i = 1/N sum_j cos(f_i, f_j) = <f_i/|f_i|, mean_j f_j/|f_j|>``, computed
    exactly in O(N*D) time and memory; the N x N similarity matrix is never built.
    The item itself is included in the mean, as in Eq. 4.

    Args:
        features: ``[..., N, D]`` teacher features (any float dtype; computed in float32).
        dim: the item axis N. The feature axis is the last one, so for ``[B, C, H, W]``
            maps first bring channels last (``x.flatten(2).transpose(1, 2)``).
        mask: optional bool, ``features``' shape without the feature axis (e.g. ``[B, N]``): the items
            that belong to their group (e.g. an image's patches, not its padding). Eq. 4 is then over the
            group's ``N_valid`` items; masked items get avesim 0.

    Returns:
        ``[...]`` with the item axis kept and the feature axis removed, e.g.
        ``[B, N]`` for ``[B, N, D]``; float32. Zero vectors give 0, never NaN.
    """
    if features.ndim < 2:
        raise ValueError(f"features: need at least 2 dims [..., N, D], got shape {tuple(features.shape)}")
    item_dim = dim % features.ndim
    if item_dim == features.ndim - 1:
        raise ValueError("dim: the item axis must differ from the last (feature) axis")
    _check_group(features.shape[item_dim], "features")
    valid = _check_mask(mask, features.shape[:-1], "features without the feature axis")
    items = features.float().movedim(item_dim, -2)  # [..., N, D]
    if valid is None:
        avesim = similarity_to_centroid(items, unit_vector_sum(items) / items.shape[-2])
        return avesim.movedim(-1, item_dim)
    valid = valid.movedim(item_dim, -1)  # [..., N]
    count = valid.sum(dim=-1, keepdim=True).clamp_min(1).float()  # [..., 1]
    kept = items.masked_fill(~valid.unsqueeze(-1), 0.0)  # masked items: zero vectors, outside the sum, avesim 0
    avesim = similarity_to_centroid(kept, unit_vector_sum(kept) / count)
    return avesim.movedim(-1, item_dim)


def _inverse_norms(items: torch.Tensor) -> torch.Tensor:
    return items.norm(dim=-1).clamp_min(_NORM_EPS).reciprocal()  # [..., N]; zero vectors -> 0 below


def unit_vector_sum(items: torch.Tensor) -> torch.Tensor:
    """``sum_j f_j/|f_j|`` over the items of ``[..., N, D]`` float32 features -> ``[..., D]``.

    Eq. 4 factors through this sum: a group split across micro-batches or ranks needs only the
    sum of their partial sums (one all-reduce of a D-vector) to get its exact centroid.
    """
    return torch.einsum("...n,...nd->...d", _inverse_norms(items), items)  # no normalised copy of the features


def similarity_to_centroid(items: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """``<f_i/|f_i|, centroid>`` for ``[..., N, D]`` float32 features and a ``[..., D]`` centroid -> ``[..., N]``.

    With ``centroid = mean_j f_j/|f_j|`` this is Eq. 4's average similarity.
    """
    return torch.einsum("...nd,...d->...n", items, centroid) * _inverse_norms(items)


# The smallest temperature taken. Eq. 5 is already a hard arg-min of avesim there (weights of items 0.01 apart
# differ by e^100); below ~1e-38, -avesim / tau overflows float32 and every weight becomes NaN.
MIN_TAU = 1e-4


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not math.isfinite(tau) or tau < MIN_TAU:
        raise ValueError(f"tau: must be a finite number >= {MIN_TAU:g}, got {tau}")
    return tau


def _sum_normalize(values: torch.Tensor) -> torch.Tensor:
    """Eq. 7, ``(x - x_min) / sum_j (x_j - x_min)`` over the last dim; all-equal -> uniform."""
    shifted = values - values.amin(dim=-1, keepdim=True)
    total = shifted.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(values, 1.0 / values.shape[-1])
    return torch.where(total > 0, shifted / total.clamp_min(torch.finfo(values.dtype).tiny), uniform)


def _masked_weights(values: torch.Tensor, valid: torch.Tensor, tau: float, normalizer: str) -> torch.Tensor:
    """:func:`srw_weights` over each group's valid items only; masked items (and empty groups) get 0."""
    if normalizer in ("softmax", "reverse"):
        sign = -1.0 if normalizer == "softmax" else 1.0
        logits = (sign * values / tau).masked_fill(~valid, -math.inf)
        weights = torch.softmax(logits, dim=-1)
        return torch.where(valid.any(dim=-1, keepdim=True), weights, 0.0)  # an all-masked group: 0, not NaN
    count = valid.sum(dim=-1, keepdim=True)
    uniform = valid / count.clamp_min(1)
    if normalizer == "uniform":
        return uniform
    x = (-values).masked_fill(~valid, math.inf)
    shifted = (x - x.amin(dim=-1, keepdim=True)).masked_fill(~valid, 0.0)  # Eq. 7 over the valid items
    total = shifted.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, shifted / total.clamp_min(torch.finfo(values.dtype).tiny), uniform)


@torch.no_grad()
def srw_weights(avesim: torch.Tensor, tau: float, normalizer: str = "softmax",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item loss weights over the last dim; they sum to 1 and carry no gradient.

    Args:
        avesim: ``[..., N]`` average similarities (from :func:`average_similarity`).
        tau: temperature of Eq. 5, > 0; smaller means stronger re-weighting.
        normalizer: how similarities become weights:
            ``"softmax"``: Eq. 5, ``softmax(-avesim / tau)``; low similarity (tail) weighs more.
            ``"reverse"``: Table 7's ablation, ``softmax(+avesim / tau)``; head items weigh more.
            ``"sum"``: Table 9's SumNormalizer, Eq. 7 applied to ``x = -avesim``:
            ``w_i = (avesim_max - avesim_i) / sum_j (avesim_max - avesim_j)``, so tail
            items still weigh more and the most typical item gets 0. Eq. 7 is scale
            invariant, so tau has no effect here (it is still validated). A group whose
            values are all equal gets uniform weights.
            ``"uniform"``: ``1/N``, the plain mean of Eq. 3 (the vanilla baseline).
        mask: optional bool ``[..., N]``, the items that count (e.g. an image's patches, not its
            padding): the normalizer runs over each group's valid items only (Eq. 5 over them), masked
            items get weight 0, and a group with no valid item gets all zeros.

    Returns:
        ``[..., N]`` float32 weights, detached.
    """
    tau = _check_tau(tau)
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer: unknown {normalizer!r}, expected one of {', '.join(NORMALIZERS)}")
    if avesim.ndim < 1:
        raise ValueError("avesim: need at least 1 dim [..., N], got a scalar")
    _check_group(avesim.shape[-1], "avesim")
    valid = _check_mask(mask, avesim.shape, "avesim")
    values = avesim.detach().float()
    if valid is not None:
        return _masked_weights(values, valid, tau, normalizer)
    if normalizer == "softmax":
        return torch.softmax(-values / tau, dim=-1)  # softmax subtracts the max: stable for small tau
    if normalizer == "reverse":
        return torch.softmax(values / tau, dim=-1)
    if normalizer == "sum":
        return _sum_normalize(-values)
    return torch.full_like(values, 1.0 / values.shape[-1])


def reweighted_mean(per_item_loss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 6, ``sum_i w_i L_i`` over the last dim, then the mean over leading dims.

    Args:
        per_item_loss: ``[..., N]`` unreduced losses (from :mod:`mobilesam_srw.losses`).
        weights: ``[..., N]`` weights of each group, e.g. from :func:`srw_weights`.

    Returns:
        A scalar: one weighted sum per group, averaged over groups (e.g. over the batch).
    """
    if per_item_loss.shape != weights.shape:
        raise ValueError(
            f"weights: shape {tuple(weights.shape)} does not match per_item_loss shape "
            f"{tuple(per_item_loss.shape)}"
        )
    if per_item_loss.ndim < 1:
        raise ValueError("per_item_loss: need at least 1 dim [..., N], got a scalar")
    weights = weights.detach().to(per_item_loss.dtype)
    return (per_item_loss * weights).sum(dim=-1).mean()
