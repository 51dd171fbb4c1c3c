"""SRW in anyone's training loop: Eq. 4-6 over the global batch under DDP, with gradient accumulation.

:class:`SRWLoss` (and its functional form :func:`srw_loss`) turns unreduced distillation losses and the
teacher's features into the loss to backpropagate::

    srw = SRWLoss(tau=0.5)
    loss = srw(per_sample_loss, teacher_features)   # [B] and [B, D]: the samples of the batch are one group
    loss.backward()

Two kinds of groups (Section 3.2 compares each item with the items of its group):

- *sample-wise*, ``per_sample_loss [B]`` with ``teacher_features [B, D]``: the group is the batch. With
  ``scope="global"`` (the default) and ``torch.distributed`` initialised, it is the *global* batch, all
  ranks' samples together. Eq. 4 factors as ``avesim_i = <f_i/|f_i|, c>`` with ``c = 1/G sum_j f_j/|f_j|``,
  so one all-reduce of a D-vector gives ``c`` and one all-gather of the G avesim values gives Eq. 5 over
  the whole batch (:func:`batch_weights`, which the engine uses too). Each rank returns
  ``world_size x sum_{i on this rank} w_i l_i``: DDP averages gradients over ranks, so the step's
  gradient is that of Eq. 6, ``sum_i w_i l_i`` over the global batch, and the mean of the ranks' values
  (what a logger's ``sync_dist``/all-reduce mean shows) is its value. ``scope="local"`` (or no process
  group) makes each rank's batch its own group: each rank returns Eq. 6 over its batch.
- *patch-wise*, ``per_item_loss [B, N]`` with ``teacher_features [B, N, D]`` or stored ``avesim [B, N]``
  (SAM: the N patches of each image): each image is a group (Eq. 5 per row, an optional ``mask`` drops
  padding items), and the loss is the mean over images of Eq. 6, over the global batch's images under
  ``scope="global"``.

Gradient accumulation: :meth:`SRWLoss.accumulate` takes the teacher side of all micro-batches of one
optimiser step first, so their weights are those of one batch made of them all::

    features = [teacher(x) for x in micro_batches]          # the teacher side first
    with srw.accumulate(features):                           # Eq. 4-5 over the whole step
        for x, f in zip(micro_batches, features):
            srw(per_sample_loss(student(x), f), f).backward()   # f: the same tensor objects

Do not divide these losses by the number of micro-batches: their sum is already the step's Eq. 6.

The weights never carry gradient; teacher features may be fp16/bf16 (the weights are computed in float32).
Bad shapes, tau, normalizer or scope raise a one-line ``ValueError``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from mobilesam_srw.srw import (
    NORMALIZERS,
    _check_tau,
    average_similarity,
    similarity_to_centroid,
    srw_weights,
    unit_vector_sum,
)

SCOPES = ("global", "local")


# --- the global batch (shared with the engine) -------------------------------------------------------
def _rank_and_size(distributed: bool | None, group) -> tuple[int, int]:
    """This process's rank and the number of ranks whose samples form one group (0, 1 when alone)."""
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
    if not distributed:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _full_precision(tensor: torch.Tensor) -> torch.autocast:
    """Autocast off on ``tensor``'s device: the weights are computed in float32 inside users' AMP regions too."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


@dataclass(frozen=True)
class BatchWeights:
    """Eq. 5 weights with every sample of every micro-batch on every rank as one group.

    Args:
        local: this rank's weights, one ``[b_k]`` tensor per micro-batch; over all ranks and micro-batches
            they sum to 1.
        avesim: ``[G]`` Eq. 4 of the whole group (rank order, then micro-batch order; the same on every rank).
        weights: ``[G]`` Eq. 5 of the whole group, in the same order.
    """

    local: list[torch.Tensor]
    avesim: torch.Tensor
    weights: torch.Tensor


def _check_features(features: Sequence[torch.Tensor]) -> None:
    if len(features) == 0:
        raise ValueError("teacher_features: need at least one micro-batch")
    dims = {f.shape[-1] for f in features if f.ndim == 2}
    for f in features:
        if f.ndim != 2 or len(dims) != 1:
            raise ValueError(f"teacher_features: expected [B, D] per micro-batch with one D, got shapes "
                             f"{[tuple(f.shape) for f in features]}")
        if not f.is_floating_point():
            raise ValueError(f"teacher_features: expected a floating-point tensor, got {f.dtype}")


@torch.no_grad()
def batch_weights(features: Sequence[torch.Tensor], tau: float, normalizer: str = "softmax", *,
                  distributed: bool | None = None, group=None, same_size: bool = False) -> BatchWeights:
    """Eq. 4-5 with all samples of ``features`` (this rank's micro-batches) on all ranks as one group.

    Exact for any number of ranks and micro-batches: one all-reduce of ``D + world_size`` numbers (the sum
    of unit features and each rank's sample count) and one all-gather of the avesim values.

    Args:
        features: this rank's ``[b_k, D]`` teacher features, one tensor per micro-batch (any float dtype;
            computed in float32). Ranks may hold different numbers of samples.
        tau: Eq. 5's temperature, > 0.
        normalizer: see :func:`mobilesam_srw.srw.srw_weights`.
        distributed: whether the group spans the ranks of ``group``; ``None``: when ``torch.distributed`` is
            initialised with more than one rank. Every rank must then call this together.
        group: the process group (``None``: the default one).
        same_size: every rank holds as many samples as this one (the engine's case): skips reading the
            ranks' counts back to the host (a GPU synchronisation).
    """
    _check_features(features)
    with _full_precision(features[0]):
        return _batch_weights(features, tau, normalizer, distributed, group, same_size)


def _batch_weights(features: Sequence[torch.Tensor], tau: float, normalizer: str, distributed: bool | None, group,
                   same_size: bool) -> BatchWeights:
    rank, world = _rank_and_size(distributed, group)
    items = [f.float() for f in features]
    sizes = [f.shape[0] for f in items]
    total = torch.stack([unit_vector_sum(f) for f in items]).sum(dim=0)  # [D]
    counts = torch.zeros(world, device=total.device)
    counts[rank] = sum(sizes)
    if world > 1:
        packed = torch.cat([total, counts])
        dist.all_reduce(packed, group=group)
        total, counts = packed[:-world], packed[-world:]
    host_counts = [sum(sizes)] * world if same_size else [int(c) for c in counts.tolist()]
    if sum(host_counts) < 2:
        raise ValueError(f"teacher_features: SRW compares the samples of a batch, which needs at least 2, "
                         f"got {sum(host_counts)}")
    centroid = total / counts.sum()
    mine = torch.cat([similarity_to_centroid(f, centroid) for f in items])  # Eq. 4 for this rank's samples
    if world > 1:
        longest = max(host_counts)
        parts = [mine.new_empty(longest) for _ in range(world)]
        dist.all_gather(parts, torch.nn.functional.pad(mine, (0, longest - mine.shape[0])), group=group)
        everyone = torch.cat([part[:count] for part, count in zip(parts, host_counts)])
    else:
        everyone = mine
    weights = srw_weights(everyone, tau, normalizer)  # Eq. 5 over the whole group
    start = sum(host_counts[:rank])
    return BatchWeights(list(weights[start : start + sum(sizes)].split(sizes)), everyone, weights)


# --- one optimiser step's coefficients ----------------------------------------------------------------
def _check_settings(tau: float, normalizer: str, scope: str) -> float:
    tau = _check_tau(tau)
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer: unknown {normalizer!r}, expected one of {', '.join(NORMALIZERS)}")
    if scope not in SCOPES:
        raise ValueError(f"scope: unknown {scope!r}, expected one of {', '.join(SCOPES)}")
    return tau


def _check_item_inputs(features: torch.Tensor | None, avesim: torch.Tensor | None,
                       mask: torch.Tensor | None) -> tuple[int, int]:
    """``[B, N]`` of one patch-wise micro-batch's teacher side, or one line."""
    if (features is None) == (avesim is None):
        raise ValueError("teacher_features, avesim: give exactly one for per-item losses [B, N]")
    if features is not None:
        if features.ndim != 3 or not features.is_floating_point():
            raise ValueError(f"teacher_features: expected floating-point [B, N, D] for per-item losses, got "
                             f"{features.dtype} {tuple(features.shape)}")
        shape = features.shape[:2]
    else:
        if avesim.ndim != 2:
            raise ValueError(f"avesim: expected [B, N], got shape {tuple(avesim.shape)}")
        shape = avesim.shape
    if mask is not None and mask.shape != shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match the items {tuple(shape)}")
    return tuple(shape)


@dataclass(frozen=True)
class SRWStep:
    """The SRW weights of one optimiser step's micro-batches (yielded by :meth:`SRWLoss.accumulate`).

    Args:
        weights: per micro-batch, Eq. 5's weights: ``[b_k]`` sample weights (in ``global`` scope they sum to
            1 over all ranks and micro-batches, in ``local`` scope over this rank's micro-batches), or
            ``[b_k, N]`` item weights (each image's row sums to 1 over its valid items).
        images: for patch-wise groups, the number of images the step's loss averages over (a tensor);
            ``None`` for sample-wise groups.
        factor: what this rank's share is multiplied by so that DDP's gradient averaging gives the gradient
            of the global objective: the number of ranks in ``global`` scope, else 1.
        keys: the teacher-side tensors each micro-batch was given with (found again by identity).
    """

    weights: list[torch.Tensor]
    images: torch.Tensor | None
    factor: int
    keys: tuple[torch.Tensor, ...]

    def loss(self, index: int, per_item_loss: torch.Tensor) -> torch.Tensor:
        """Micro-batch ``index``'s share of the step's objective (float32 scalar; weights detached)."""
        weights = self.weights[index]
        if per_item_loss.shape != weights.shape:
            raise ValueError(f"per_sample_loss: shape {tuple(per_item_loss.shape)} does not match its teacher "
                             f"side {tuple(weights.shape)}")
        weights = weights.to(per_item_loss.device)
        share = (per_item_loss.float() * weights).sum()
        if self.images is not None:
            share = share / self.images.to(per_item_loss.device)
        return share * self.factor

    def index(self, key: torch.Tensor) -> int:
        for index, known in enumerate(self.keys):
            if key is known:
                return index
        raise ValueError("teacher_features: not one of the tensors given to accumulate(); pass the same "
                         "tensor objects to both")


def _step(features: Sequence[torch.Tensor] | None, avesim: Sequence[torch.Tensor] | None,
          masks: Sequence[torch.Tensor | None] | None, tau: float, normalizer: str, scope: str, group,
          item_wise: bool) -> SRWStep:
    """The weights of the micro-batches whose teacher side is ``features`` (or ``avesim``)."""
    distributed = None if scope == "global" else False
    _, world = _rank_and_size(distributed, group)
    if not item_wise:
        for name, given in (("avesim", avesim), ("mask", masks)):
            if given is not None:
                raise ValueError(f"{name}: only for per-item losses [B, N]; per-sample losses [B] need "
                                 "teacher_features [B, D] (the group is the batch)")
        if features is None:
            raise ValueError("teacher_features: per-sample losses [B] need teacher features [B, D]")
        weights = batch_weights(features, tau, normalizer, distributed=world > 1, group=group)
        return SRWStep(weights.local, None, world, tuple(features))
    if features is None and avesim is None:
        raise ValueError("teacher_features, avesim: per-item losses [B, N] need one of them")
    keys = features if features is not None else avesim
    count = len(keys)
    masks = [None] * count if masks is None else list(masks)
    others = avesim if features is not None else features
    if others is not None or len(masks) != count:
        raise ValueError("teacher_features, avesim, mask: give one list of teacher_features or of avesim, and "
                         "one mask (or None) per micro-batch")
    weights = []
    with torch.no_grad(), _full_precision(keys[0]):
        for index, key in enumerate(keys):
            is_features = features is not None
            _check_item_inputs(key if is_features else None, None if is_features else key, masks[index])
            similarity = average_similarity(key, mask=masks[index]) if is_features else key
            weights.append(srw_weights(similarity, tau, normalizer, mask=masks[index]))
        images = torch.tensor(float(sum(w.shape[0] for w in weights)), device=weights[0].device)
        if world > 1:
            dist.all_reduce(images, group=group)
    return SRWStep(weights, images, world, tuple(keys))


def _loss_kind(loss: torch.Tensor) -> bool:
    """Whether ``loss`` is per-item ``[B, N]`` (True) or per-sample ``[B]`` (False), or one line."""
    if not isinstance(loss, torch.Tensor) or loss.ndim not in (1, 2) or not loss.is_floating_point():
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"per_sample_loss: expected unreduced floating-point losses [B] (sample-wise) or [B, N] "
                         f"(patch-wise), got {shape}")
    return loss.ndim == 2


def _check_batch(loss: torch.Tensor, features: torch.Tensor | None, avesim: torch.Tensor | None) -> None:
    key = features if features is not None else avesim
    if key is not None and tuple(key.shape[: loss.ndim]) != tuple(loss.shape):
        what = "teacher_features" if features is not None else "avesim"
        raise ValueError(f"{what}: shape {tuple(key.shape)} does not match per_sample_loss {tuple(loss.shape)}")


def srw_loss(per_sample_loss: torch.Tensor, teacher_features: torch.Tensor | None = None, *, tau: float,
             normalizer: str = "softmax", scope: str = "global", avesim: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, group=None) -> torch.Tensor:
    """The SRW loss of one batch (Eq. 4-6); the functional form of :class:`SRWLoss`.

    Args:
        per_sample_loss: unreduced losses, ``[B]`` (sample-wise: the batch is the group) or ``[B, N]``
            (patch-wise: each row is a group of N items).
        teacher_features: ``[B, D]`` for ``[B]`` losses, ``[B, N, D]`` for ``[B, N]`` losses (any float dtype).
        tau: Eq. 5's temperature, > 0.
        normalizer: ``softmax`` (Eq. 5), ``reverse``, ``sum`` or ``uniform`` (see
            :func:`mobilesam_srw.srw.srw_weights`).
        scope: ``global``: the group spans all ranks when ``torch.distributed`` is initialised (every rank
            must call together); ``local``: this rank's batch only.
        avesim: instead of ``teacher_features`` for ``[B, N]`` losses, stored Eq. 4 values ``[B, N]``.
        mask: ``[B, N]`` bool, the items that count for ``[B, N]`` losses (e.g. not padding patches).
        group: the process group of ``global`` scope (``None``: the default one).

    Returns:
        A float32 scalar: sample-wise, ``k x sum_i w_i l_i`` over this rank's samples with ``k`` the number
        of ranks in ``global`` scope (so that DDP's gradient averaging gives the gradient of Eq. 6 over the
        global batch), else 1; patch-wise, ``k x`` this rank's images' Eq. 6 summed, over the number of images
        in the group of images (global or local).
    """
    tau = _check_settings(tau, normalizer, scope)
    item_wise = _loss_kind(per_sample_loss)
    _check_batch(per_sample_loss, teacher_features, avesim)
    step = _step(None if teacher_features is None else [teacher_features], None if avesim is None else [avesim],
                 None if mask is None else [mask], tau, normalizer, scope, group, item_wise)
    return step.loss(0, per_sample_loss)


class SRWLoss(nn.Module):
    """Sample-wise Re-Weighting as a loss module: ``loss = srw(per_sample_loss, teacher_features)``.

    See the module docstring and :func:`srw_loss` for the arguments and what the value is; the module holds
    ``tau``, ``normalizer``, ``scope`` and ``group``, and adds :meth:`accumulate` for gradient accumulation.
    It has no parameters and no buffers (nothing in its state dict).

    Args:
        tau: Eq. 5's temperature, > 0 (the paper tunes it per setting; smaller is stronger re-weighting).
        normalizer: ``softmax`` (Eq. 5, the paper's), ``reverse``, ``sum`` or ``uniform`` (the plain mean).
        scope: ``global`` (the paper's batch: all ranks' samples when ``torch.distributed`` is initialised)
            or ``local`` (each rank's batch).
        group: the process group of ``global`` scope (``None``: the default one).
    """

    def __init__(self, tau: float, normalizer: str = "softmax", scope: str = "global", group=None) -> None:
        super().__init__()
        self.tau = _check_settings(tau, normalizer, scope)
        self.normalizer = normalizer
        self.scope = scope
        self.group = group
        self._step: SRWStep | None = None

    def extra_repr(self) -> str:
        return f"tau={self.tau}, normalizer={self.normalizer!r}, scope={self.scope!r}"

    def forward(self, per_sample_loss: torch.Tensor, teacher_features: torch.Tensor | None = None, *,
                avesim: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self._step is None:
            return srw_loss(per_sample_loss, teacher_features, tau=self.tau, normalizer=self.normalizer,
                            scope=self.scope, avesim=avesim, mask=mask, group=self.group)
        _loss_kind(per_sample_loss)
        if mask is not None:
            raise ValueError("mask: inside accumulate(), give the masks to accumulate()")
        key = teacher_features if teacher_features is not None else avesim
        if key is None:
            raise ValueError("teacher_features: inside accumulate(), pass the micro-batch's teacher features "
                             "(or avesim) given to accumulate()")
        return self._step.loss(self._step.index(key), per_sample_loss)

    @contextlib.contextmanager
    def accumulate(self, teacher_features: Sequence[torch.Tensor] | None = None, *,
                   avesim: Sequence[torch.Tensor] | None = None,
                   masks: Sequence[torch.Tensor | None] | None = None) -> Iterator[SRWStep]:
        """Weights of one optimiser step's micro-batches, the same as for one batch made of them all.

        Give the teacher side of every micro-batch of the step (``[b_k, D]`` features for per-sample
        losses; ``[b_k, N, D]`` features or ``[b_k, N]`` avesim, and optional masks, for per-item losses);
        inside the block, ``self(loss_k, features_k)`` with the *same tensor objects* returns micro-batch
        k's share, and the shares sum to the step's loss (do not divide them by the number of
        micro-batches). In ``global`` scope this costs one all-reduce and one all-gather per step, not per
        micro-batch. Yields the :class:`SRWStep` (its ``weights`` per micro-batch, e.g. for logging).
        """
        if self._step is not None:
            raise ValueError("accumulate(): already inside an accumulate() block of this SRWLoss")
        features = None if teacher_features is None else list(teacher_features)
        stored = None if avesim is None else list(avesim)
        keys = features if features is not None else stored
        if not keys:
            raise ValueError("accumulate(): give the teacher_features (or avesim) of at least one micro-batch")
        item_wise = keys[0].ndim == (3 if features is not None else 2)
        self._step = _step(features, stored, masks, self.tau, self.normalizer, self.scope, self.group, item_wise)
        try:
            yield self._step
        finally:
            self._step = None
