"""Training data: random access into precompute shards and a deterministic global batch order.

Shards are read by index (one seek per member) rather than streamed, so the order of an
epoch is a seeded permutation of all samples: a resumed run continues with exactly the
batches it would have seen, and K ranks with grad accumulation A see exactly the global
batches of one process. Global step ``t`` of an epoch takes permutation slice
``[t*G, (t+1)*G)`` with ``G = batch * ranks * accum``; micro-step ``a`` of rank ``r`` takes
its sub-slice ``(a*ranks + r) * batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.transforms import pad_image
from mobilesam_srw.srw import average_similarity
from mobilesam_srw.tar_index import FileSpan, index_tar

REQUIRED_FIELDS = (shards.IMAGE_FIELD, shards.EMBEDDING_FIELD, shards.META_FIELD)


def index_shards(paths: Sequence[str]) -> list[dict[str, FileSpan]]:
    """One entry per sample (in shard and member order): field -> where its bytes are."""
    samples: list[dict[str, FileSpan]] = []
    for path in paths:
        members, error = index_tar(Path(path))
        if error is not None:
            raise SrwError(f"cannot read shard {path}: {error}")
        by_key: dict[str, dict[str, FileSpan]] = {}
        for name, span in members.items():
            key, _, field = name.partition(".")
            by_key.setdefault(key, {})[field] = span
        for key, fields in by_key.items():
            if missing := [f for f in REQUIRED_FIELDS if f not in fields]:
                raise SrwError(f"shard {path}: sample {key} has no {', '.join(missing)} (not a precompute shard?)")
            samples.append({"__key__": key, **fields})
    return samples


def embedding_shape_of(samples: list[dict[str, FileSpan]]) -> tuple[int, ...]:
    """The embedding shape of the first indexed sample, e.g. ``(256, 64, 64)``."""
    if not samples:
        raise SrwError("the shards hold no samples")
    return tuple(shards.load_npy(samples[0][shards.EMBEDDING_FIELD].read()).shape)


def resolve_shards(patterns: Sequence[str], what: str = "--shards") -> list[str]:
    paths = shards.shard_paths(patterns)
    if not paths:
        raise SrwError(f"{what}: no shards match {' '.join(map(str, patterns))}")
    return paths


class EmbeddingShards(Dataset):
    """Map-style dataset of precompute samples for training.

    Args:
        samples: from :func:`index_shards`.
        input_size: the encoder input size S; images are padded to ``S x S``.

    Each item: ``image`` ``[3, S, S]`` uint8 (padded), ``size`` ``[2]`` (h, w),
    ``embedding`` ``[C, H, W]`` (fp16 stays fp16), ``avesim`` ``[H*W]`` float32 (stored, or computed
    from the embedding when a shard has none), ``key``.
    """

    def __init__(self, samples: list[dict[str, FileSpan]], input_size: int) -> None:
        self.samples = samples
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        spans = self.samples[index]
        raw = {"__key__": spans["__key__"]}
        raw.update({field: span.read() for field, span in spans.items() if field != "__key__"})
        sample = shards.decode_sample(raw, as_float32=False)
        embedding = torch.from_numpy(sample.embedding)
        if sample.avesim is not None:
            avesim = torch.from_numpy(sample.avesim).flatten()
        else:  # shards written without it: Eq. 4 over the teacher embedding's patches, here in the worker
            avesim = average_similarity(embedding.flatten(1).T)
        return {
            "image": pad_image(sample.image, self.input_size),
            "size": torch.tensor(sample.image.shape[:2]),
            "embedding": embedding,
            "avesim": avesim,
            "key": sample.key,
        }


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
        return self.num_samples // self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def micro_batches(self, epoch: int, rank: int, start_step: int = 0) -> Iterator[list[int]]:
        """Index lists of ``rank``'s micro-batches, from global step ``start_step`` to the epoch's end."""
        order = self.permutation(epoch)
        for step in range(start_step, self.steps_per_epoch):
            for micro in range(self.grad_accum):
                start = step * self.global_batch + (micro * self.world_size + rank) * self.batch_size
                yield order[start : start + self.batch_size].tolist()


class MicroBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` over one epoch of a :class:`BatchPlan`, for one rank."""

    def __init__(self, plan: BatchPlan, epoch: int, rank: int, start_step: int = 0) -> None:
        self.plan, self.epoch, self.rank, self.start_step = plan, epoch, rank, start_step

    def __iter__(self) -> Iterator[list[int]]:
        return self.plan.micro_batches(self.epoch, self.rank, self.start_step)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.grad_accum
