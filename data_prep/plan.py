"""The precompute plan: which samples, in which order, into which shard.

Every rank and every rerun with the same arguments builds the same plan, so shard
``i`` always holds the valid samples among planned samples ``[i * S, (i + 1) * S)``.
That is what makes a killed run resumable and lets ranks split shards without talking.
The plan does not know the input kind: it takes a source's :class:`Discovery`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mobilesam_srw.data_prep.sources import Discovery, SampleRef, Skip
from mobilesam_srw.data_prep.subset import Subset, check_listed_names_found, choose
from mobilesam_srw.errors import SrwError
from mobilesam_srw.shards import is_safe_key


@dataclass(frozen=True)
class Plan:
    """The ordered samples to encode and the inputs skipped while planning.

    Args:
        samples: planned sample references in their fixed order.
        skipped: samples and sources left out while scanning (stray members, bad tars, ...).
        shard_size: planned samples per shard.
    """

    samples: list[SampleRef]
    skipped: list[Skip]
    shard_size: int

    @property
    def sources(self) -> list[str]:
        """The tars and folders the samples come from, in plan order."""
        return list(dict.fromkeys(sample.source for sample in self.samples))

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


def make_plan(discovery: Discovery, subset: Subset, seed: int, shard_size: int, limit: int | None = None) -> Plan:
    """Choose the subset among the discovered units (per granularity), scan the chosen ones, and
    order the samples; unsafe and duplicate keys are skipped."""
    if shard_size < 1:
        raise SrwError(f"--shard-size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise SrwError(f"--limit must be >= 1, got {limit}")
    chosen: set[str] = set()
    for granularity in dict.fromkeys(unit.granularity for unit in discovery.units):
        chosen |= choose([u.name for u in discovery.units if u.granularity == granularity], subset, seed)
    check_listed_names_found(subset, chosen)

    samples: list[SampleRef] = []
    skipped = list(discovery.skipped)
    for unit in discovery.units:
        if unit.name in chosen:
            refs, skips = unit.scan()
            samples.extend(refs)
            skipped.extend(skips)
    samples, rejected = _drop_bad_keys(samples)
    skipped.extend(rejected)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise SrwError(f"no {discovery.what} found in the input ({subset.describe()} chosen)")
    return Plan(samples, skipped, shard_size)


def _drop_bad_keys(samples: list[SampleRef]) -> tuple[list[SampleRef], list[Skip]]:
    seen: set[str] = set()
    kept, skipped = [], []
    for sample in samples:
        if not is_safe_key(sample.key):
            skipped.append(Skip(sample.key[:200], sample.source, "unsafe key (letters, digits, _ and - only, 1-128)"))
        elif sample.key in seen:
            skipped.append(Skip(sample.key, sample.source, "duplicate key (already taken from another source)"))
        else:
            seen.add(sample.key)
            kept.append(sample)
    return kept, skipped
