"""Training data of the SAM task: random access into precompute shards.

Shards are read by index (one seek per member, :func:`mobilesam_srw.shards.index_shards`)
rather than streamed, so the engine's :class:`~mobilesam_srw.engine.plan.BatchPlan` can order
an epoch as a seeded permutation of all samples.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mobilesam_srw import shards
from mobilesam_srw.sam.transforms import pad_image
from mobilesam_srw.tar_index import FileSpan


class EmbeddingShards(Dataset):
    """Map-style dataset of precompute samples for training.

    Args:
        samples: from :func:`mobilesam_srw.shards.index_shards`.
        input_size: the encoder input size S; images are padded to ``S x S``.
        maps: further target maps to read (SAM 2's ``high_res_0``, ``high_res_1``).

    Each item: ``image`` ``[3, S, S]`` uint8 (padded), ``size`` ``[2]`` (h, w),
    ``embedding`` ``[C, H, W]`` (fp16 stays fp16), ``avesim`` ``[H*W]`` float32 (stored, or computed
    from the embedding when a shard has none: :func:`~mobilesam_srw.shards.decode_sample`), ``key``,
    and each of ``maps`` by name.
    """

    def __init__(self, samples: list[dict[str, FileSpan]], input_size: int, maps: tuple[str, ...] = ()) -> None:
        self.samples = samples
        self.input_size = input_size
        self.maps = tuple(maps)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = shards.read_indexed(self.samples[index], as_float32=False, maps=self.maps)
        embedding = torch.from_numpy(sample.embedding)
        return {
            "image": pad_image(sample.image, self.input_size),
            "size": torch.tensor(sample.image.shape[:2]),
            "embedding": embedding,
            "avesim": torch.from_numpy(sample.avesim).flatten(),
            "key": sample.key,
            **{name: torch.from_numpy(sample.maps[name]) for name in self.maps},
        }


def embedding_statistics(dataset: EmbeddingShards, samples: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``[C]`` of the teacher embeddings of the first
    ``samples`` items (every patch counted), in float64 then float32."""
    total = squares = None
    count = 0
    for index in range(min(samples, len(dataset))):
        embedding = torch.from_numpy(shards.read_indexed(dataset.samples[index], with_image=False).embedding)
        patches = embedding.flatten(1).double()  # [C, H*W]
        total = patches.sum(1) if total is None else total + patches.sum(1)
        squares = patches.square().sum(1) if squares is None else squares + patches.square().sum(1)
        count += patches.shape[1]
    if total is None:
        raise ValueError("dataset: no samples")
    mean = total / count
    return mean.float(), (squares / count - mean.square()).clamp_min(0).sqrt().float()
