"""A deterministic global batch order, the same for any number of ranks and accumulation steps.

Global step ``t`` of an epoch takes permutation slice ``[t*G, (t+1)*G)`` with
``G = batch * ranks * accum``; micro-step ``a`` of rank ``r`` takes its sub-slice starting at
``(a*ranks + r) * batch``. A resumed run continues with exactly the batches it would have
seen, and K ranks with accumulation A see exactly the global batches of one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler


@dataclass(frozen=True)
class BatchPlan:
    """The global batch order of a run.

    Args:
        num_samples: samples in the training set.
        batch_size: per rank, per micro-step.
        world_size: ranks.
        grad_accum: micro-steps per optimiser step.
        seed: seeds each epoch's permutation (with the epoch number).
    """

    num_samples: int
    batch_size: int
    world_size: int = 1
    grad_accum: int = 1
    seed: int = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Whole global batches per epoch; a final partial one is dropped."""
        return self.num_samples // self.global_batch

    def generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch``'s order (and of its DataLoader's worker seeds)."""
        return torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=self.generator(epoch))

    def micro_batches(self, epoch: int, rank: int, start_step: int = 0) -> Iterator[list[int]]:
        """Index lists of ``rank``'s micro-batches, from global step ``start_step`` to the epoch's end."""
        order = self.permutation(epoch)
        for step in range(start_step, self.steps_per_epoch):
            for micro in range(self.grad_accum):
                start = step * self.global_batch + (micro * self.world_size + rank) * self.batch_size
                yield order[start : start + self.batch_size].tolist()


class EpochItems(Dataset):
    """The training set as one epoch reads it: item ``i`` is drawn under torch's RNG seeded by (seed, epoch,
    ``i``), so its random augmentation does not depend on which worker reads it, on the items read before it,
    or on where a run was resumed (a resumed run sees exactly the items of an uninterrupted one). The
    caller's RNG is left as it was.

    Args:
        dataset: the map-style training set.
        seed: the run's seed.
        epoch: the epoch.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.base = dataset, (seed * 100_003 + epoch) * 1_000_003

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        generator = torch.random.default_generator  # the CPU generator (torch.manual_seed would seed CUDA too)
        kept = generator.get_state()
        try:
            generator.manual_seed((self.base + index) % 2**63)
            return self.dataset[index]
        finally:
            generator.set_state(kept)


class MicroBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` over one epoch of a :class:`BatchPlan`, for one rank."""

    def __init__(self, plan: BatchPlan, epoch: int, rank: int, start_step: int = 0) -> None:
        self.plan, self.epoch, self.rank, self.start_step = plan, epoch, rank, start_step

    def __iter__(self) -> Iterator[list[int]]:
        return self.plan.micro_batches(self.epoch, self.rank, self.start_step)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.grad_accum
