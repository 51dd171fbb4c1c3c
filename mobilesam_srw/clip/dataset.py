"""Training data of the CLIP task: random access into ``srw-clip precompute`` shards.

Shards are read by index (one seek per member, :func:`mobilesam_srw.clip.shards.index_clip_shards`)
so the engine's :class:`~mobilesam_srw.engine.plan.BatchPlan` can order an epoch as a seeded
permutation of all samples.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mobilesam_srw.clip import shards as clip_shards
from mobilesam_srw.tar_index import FileSpan


class ClipEmbeddingShards(Dataset):
    """Map-style dataset of stored pixels and teacher embeddings.

    Args:
        samples: from :func:`~mobilesam_srw.clip.shards.index_clip_shards`.
        with_embedding: read the stored embedding (``False`` for ``--online``, where the teacher
            recomputes it from the pixels).
        image_size: the teacher's input ``(H, W)`` every stored image must have (the manifest's).
        embed_dim: the embedding size ``D`` every stored embedding must have (the manifest's).

    Each item: ``pixels`` ``[3, S, S]`` uint8 (the teacher's input before normalisation),
    ``embedding`` ``[D]`` (fp16 storage stays fp16; absent without ``with_embedding``), ``key``. A sample
    that is not what the manifest says (another size, a NaN embedding, ...) is one line naming it.
    """

    def __init__(self, samples: list[dict[str, FileSpan]], with_embedding: bool = True,
                 image_size: tuple[int, int] | None = None, embed_dim: int | None = None) -> None:
        self.samples = samples
        self.with_embedding = with_embedding
        self.image_size, self.embed_dim = image_size, embed_dim

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = clip_shards.read_indexed(self.samples[index], as_float32=False, with_embedding=self.with_embedding,
                                          image_size=self.image_size, embed_dim=self.embed_dim)
        item = {"pixels": torch.from_numpy(sample.pixels).permute(2, 0, 1).contiguous(), "key": sample.key}
        if self.with_embedding:
            item["embedding"] = torch.from_numpy(sample.embedding)
        return item
