"""The precompute plan: which samples, in which order, into which shard.

Every rank and every rerun with the same arguments builds the same plan, so shard
``i`` always holds the valid samples among planned samples ``[i * S, (i + 1) * S)``.
That is what makes a killed run resumable and lets ranks split shards without talking.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mobilesam_srw.data_prep.sa1b import SampleRef, Skip, discover_sources, scan_tar
from mobilesam_srw.data_prep.subset import Subset, check_listed_names_found, choose
from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class Plan:
    """The ordered samples to encode and the inputs skipped while planning.

    Args:
        samples: planned sample pairs in their fixed order.
        skipped: samples and sources left out while scanning (stray members, bad tars, ...).
        sources: names of the chosen tars and folders.
        shard_size: planned samples per shard.
    """

    samples: list[SampleRef]
    skipped: list[Skip]
    sources: list[str]
    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-len(self.samples) // self.shard_size)

    def shard_samples(self, index: int) -> list[SampleRef]:
        return self.samples[index * self.shard_size : (index + 1) * self.shard_size]

    def fingerprint(self) -> str:
        """A hash of the planned keys, sources and shard size: equal plans write equal shards."""
        digest = hashlib.sha256(f"shard_size={self.shard_size}\n".encode())
        for sample in self.samples:
            digest.update(f"{sample.source}/{sample.key}\n".encode())
        return digest.hexdigest()


def make_plan(
    paths: Sequence[str | Path], subset: Subset, seed: int, shard_size: int, limit: int | None = None
) -> Plan:
    """Discover inputs, choose the subset, scan the chosen tars, and order the samples."""
    if shard_size < 1:
        raise SrwError(f"--shard-size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise SrwError(f"--limit must be >= 1, got {limit}")
    sources = discover_sources(paths)
    tar_names = [tar.name for tar in sources.tars]
    if len(set(tar_names)) != len(tar_names):
        raise SrwError("two input tars share a file name; SA-1B tar names must be unique")
    chosen_tars = choose(tar_names, subset, seed)
    chosen_loose = choose([ref.key for ref in sources.loose], subset, seed)
    if subset.names is not None:
        check_listed_names_found(subset, chosen_tars | chosen_loose)

    samples: list[SampleRef] = []
    skipped = list(sources.skipped)
    for tar in sources.tars:
        if tar.name in chosen_tars:
            refs, skips = scan_tar(tar)
            samples.extend(refs)
            skipped.extend(skips)
    samples.extend(ref for ref in sources.loose if ref.key in chosen_loose)
    samples, duplicates = _drop_duplicate_keys(samples)
    skipped.extend(duplicates)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise SrwError(f"no SA-1B samples found in the input ({subset.describe()} chosen)")
    chosen_sources = [name for name in tar_names if name in chosen_tars]
    chosen_sources += sorted({ref.source for ref in sources.loose if ref.key in chosen_loose})
    return Plan(samples, skipped, chosen_sources, shard_size)


def _drop_duplicate_keys(samples: list[SampleRef]) -> tuple[list[SampleRef], list[Skip]]:
    seen: set[str] = set()
    kept, skipped = [], []
    for sample in samples:
        if sample.key in seen:
            skipped.append(Skip(sample.key, sample.source, "duplicate key (already taken from another source)"))
        else:
            seen.add(sample.key)
            kept.append(sample)
    return kept, skipped
