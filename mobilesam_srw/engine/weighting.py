"""SRW weights of one optimiser step, for the engine's two group scopes.

Every scope is expressed as *sample weights* ``s_i`` over the global batch (they sum to 1),
and the objective is ``sum_i s_i l_i``:

- ``image`` scope: each sample is a group of N items (SAM: patches). Item weights come from
  the sample's own avesim (Eq. 5), ``l_i = sum_n w_in L_in`` (Eq. 6), and ``s_i = 1/G``.
- ``batch`` scope: the G samples of the global batch are one group. Eq. 4 factors as
  ``avesim_i = <f_i/|f_i|, c>`` with ``c = 1/G sum_j f_j/|f_j|``: one all-reduce of a D-vector
  gives ``c`` on every rank, and an all-gather of the G avesim values gives Eq. 5 over the
  whole batch, so ``s_i = w_i`` does not depend on the number of ranks or micro-batches
  (:func:`mobilesam_srw.srw_batch.batch_weights`, shared with :class:`mobilesam_srw.SRWLoss`).
- ``local`` scope: the group is each rank's micro-batch: ``s_i = w_i / (ranks x accum)``.

Each rank then backpropagates ``ranks x sum_{i in micro} s_i l_i`` per micro-batch, which DDP's
gradient averaging and accumulation turn into the gradient of the global objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.srw import average_similarity, srw_weights
from mobilesam_srw.srw_batch import batch_weights


@dataclass
class GroupStats:
    """Sums over SRW groups for the logs: largest weight, weight on the lowest-avesim quarter, count."""

    max_weight: torch.Tensor
    tail_weight: torch.Tensor
    groups: torch.Tensor

    @classmethod
    def zero(cls, device: torch.device) -> "GroupStats":
        return cls(*(torch.zeros((), device=device) for _ in range(3)))

    def add(self, weights: torch.Tensor, avesim: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the ``[..., N]`` groups of ``weights``."""
        self.max_weight = self.max_weight + weights.max(dim=-1).values.sum()
        self.tail_weight = self.tail_weight + tail_weight_fraction(weights, avesim, mask).sum()
        self.groups = self.groups + weights[..., 0].numel()


def tail_weight_fraction(weights: torch.Tensor, avesim: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., N] -> [...]``: the share of each group's weight on its lowest-avesim quarter of items.

    Uniform weights give 0.25; SRW (Eq. 5) gives more, since it up-weights the tail. With a mask,
    the quarter is of the group's valid items.
    """
    valid = torch.ones_like(avesim, dtype=torch.bool) if mask is None else mask.bool()
    order = avesim.float().masked_fill(~valid, float("inf")).argsort(dim=-1)
    quarter = (valid.sum(dim=-1, keepdim=True) // 4).clamp_min(1)
    in_tail = torch.arange(avesim.shape[-1], device=avesim.device) < quarter
    return (weights.gather(-1, order) * in_tail).sum(dim=-1)


def item_weights(avesim: torch.Tensor, tau: float, normalizer: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, N]`` weights of each sample's N items (Eq. 5 per row).

    With ``mask``, masked items get weight 0 and Eq. 5 runs over the valid items only
    (:func:`~mobilesam_srw.srw.srw_weights`' mask, the same as :class:`~mobilesam_srw.SRWLoss`').
    """
    return srw_weights(avesim, tau, normalizer, mask=mask)


@dataclass
class StepWeights:
    """Weights of one step: per micro-batch sample weights ``[b]`` (None: the plain mean ``1/G``) and, for
    ``image`` scope, item weights."""

    sample: list[torch.Tensor | None]
    item: list[torch.Tensor | None]
    stats: GroupStats


def step_weights(targets: list, scope: str, tau: float, normalizer: str, ctx: DistributedContext,
                 global_batch: int) -> StepWeights:
    """Weights of a step's micro-batches (``targets``: their :class:`~mobilesam_srw.engine.task.Targets`).

    Args:
        scope: ``image``, ``batch`` or ``local`` (see the module docstring).
        global_batch: samples in the step over all ranks and micro-batches.
    """
    device = ctx.device
    stats = GroupStats.zero(device)
    if scope == "image":
        items = []
        for target in targets:
            weights = item_weights(target.avesim, tau, normalizer, target.item_mask)
            stats.add(weights, target.avesim, target.item_mask)
            items.append(weights)
        sample = [torch.full(w.shape[:1], 1.0 / global_batch, device=device) for w in items]
        return StepWeights(sample, items, stats)
    if targets[0].features is None:  # a task that distils nothing here (e.g. training a teacher): plain means
        if normalizer != "uniform":
            raise ValueError("SRW needs teacher features: the task's targets() gave none")
        return StepWeights([None] * len(targets), [None] * len(targets), stats)
    if scope == "local":
        sample = []
        for target in targets:
            avesim = average_similarity(target.features)
            weights = srw_weights(avesim, tau, normalizer)
            stats.add(weights, avesim)
            sample.append(weights * (weights.shape[0] / global_batch))
        return StepWeights(sample, [None] * len(targets), stats)
    # Eq. 4-5 over the whole global batch, the implementation SRWLoss uses (ranks hold equal micro-batches)
    weights = batch_weights([t.features for t in targets], tau, normalizer, distributed=ctx.is_distributed,
                            same_size=True)
    if ctx.is_main:  # the one group is the same on every rank: count it once
        stats.add(weights.weights, weights.avesim)
    return StepWeights(weights.local, [None] * len(targets), stats)
