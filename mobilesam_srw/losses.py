"""Per-item distillation losses, never reduced over items, so SRW can weight them (Eq. 6).

Each function returns one value per sample (``[B]``) or per patch (``[B, N]``), in
float32 whatever the input dtype, so mixed-precision training sums them safely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, names: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{names}: student shape {tuple(student.shape)} does not match teacher shape {tuple(teacher.shape)}"
        )


def feature_mse(student: torch.Tensor, teacher: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Squared error averaged over the feature axis ``dim``, Eq. 2 per item.

    Args:
        student: student features, e.g. ``[B, C, H, W]`` SAM embeddings or ``[B, D]`` CLIP embeddings.
        teacher: teacher features of the same shape.
        dim: the feature axis to average over (the 256 channels for SAM, ``-1`` for CLIP).

    Returns:
        ``[B]`` when only the batch axis remains, else ``[B, N]`` with the remaining
        axes flattened into items in row-major order (``[B, H*W]`` for SAM, patch
        ``h * W + w``).
    """
    _check_same_shape(student, teacher, "feature_mse")
    # The fused element-wise kernel, then a sum: as fast as F.mse_loss forward and backward.
    squared = F.mse_loss(student.float(), teacher.float(), reduction="none")
    per_item = squared.sum(dim=dim) / student.shape[dim]
    return per_item if per_item.ndim <= 1 else per_item.flatten(1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD, Eq. 1: ``T^2 * KL(softmax(t/T) || softmax(s/T))`` per sample.

    Args:
        student_logits: ``[B, K]``.
        teacher_logits: ``[B, K]``.
        temperature: T > 0.

    Returns:
        ``[B]``.
    """
    _check_same_shape(student_logits, teacher_logits, "kd_loss")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl * temperature**2


def _split_target(values: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, K]`` -> the target column ``[B]`` and the other columns ``[B, K-1]`` (order kept)."""
    target_mask = F.one_hot(target.long(), values.shape[-1]).bool()
    return values[target_mask], values[~target_mask].view(values.shape[0], -1)


def _kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over the last dim, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` logits -> ``[B, 2]`` log-probs of (target class, any non-target class)."""
    log_target, log_rest = _split_target(F.log_softmax(logits, dim=-1), target)
    return torch.stack([log_target, log_rest.logsumexp(dim=-1)], dim=-1)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022) per sample: ``alpha * TCKD + beta * NCKD``.

    TCKD is ``T^2 * KL`` between the binary (target, non-target) probabilities of
    teacher and student; NCKD is ``T^2 * KL`` between their distributions over the
    non-target classes only. Computed in log space, so the batch mean equals the
    original batch formulation without its ``log(0)`` guards.

    Args:
        student_logits: ``[B, K]``.
        teacher_logits: ``[B, K]``.
        target: ``[B]`` integer class labels.
        alpha: TCKD weight.
        beta: NCKD weight (DKD uses 8 on CIFAR-100).
        temperature: T > 0.

    Returns:
        ``[B]``.
    """
    _check_same_shape(student_logits, teacher_logits, "dkd_loss")
    if target.shape != student_logits.shape[:1]:
        raise ValueError(f"target: expected shape ({student_logits.shape[0]},), got {tuple(target.shape)}")
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    tckd = _kl_from_log_probs(_binary_log_probs(t, target), _binary_log_probs(s, target))
    _, non_target_t = _split_target(t, target)
    _, non_target_s = _split_target(s, target)
    nckd = _kl_from_log_probs(F.log_softmax(non_target_t, dim=-1), F.log_softmax(non_target_s, dim=-1))
    return (alpha * tckd + beta * nckd) * temperature**2


def fitnet_loss(student_hint: torch.Tensor, teacher_hint: torch.Tensor) -> torch.Tensor:
    """FitNet (Romero et al., 2015) per sample: MSE of the regressed student hint.

    Args:
        student_hint: ``[B, ...]`` student features after the hint regressor.
        teacher_hint: ``[B, ...]`` teacher hint features of the same shape.

    Returns:
        ``[B]``, the mean squared error over all non-batch axes.
    """
    _check_same_shape(student_hint, teacher_hint, "fitnet_loss")
    return (student_hint.float() - teacher_hint.float()).pow(2).flatten(1).mean(dim=1)
