"""The task-independent half of a precompute: planned samples -> complete shards, rank by rank, resumably.

A precompute is three things this module does not know: a *source* (its :class:`~mobilesam_srw.data_prep.
plan.Plan`), a *preparation* (a map-style dataset that turns each planned sample into what the teacher
needs, in DataLoader workers) and a *teacher hook* (``encode_batch``: prepared items -> shard samples).
This module owns what is shared: which shards this rank writes (shard ``i`` goes to rank
``i % world_size``; a complete shard is never redone, so a killed run resumes), the loop that batches
prepared items through the teacher and writes each shard as soon as its last planned sample is encoded
or skipped, and the merged manifest.

Prepared items are dicts with ``shard`` (its index), ``key`` and ``source``, and either ``skip`` (the
reason it is left out) or whatever ``encode_batch`` reads; an optional ``annotations_dropped`` (reason ->
count) is recorded in the shard's part record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.data_prep import writer
from mobilesam_srw.data_prep.plan import Plan
from mobilesam_srw.data_prep.sources import SampleRef
from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.lock import loader_worker_init

EncodeBatch = Callable[[list[dict]], list[dict]]


def warn(message: str) -> None:
    """A warning line that does not break a progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def agree(ctx: DistributedContext, error: str | None) -> None:
    """:meth:`DistributedContext.agree`: every rank raises rank 0's setup error (or none does)."""
    ctx.agree(error)


def pending_shards(out: Path, plan: Plan, ctx: DistributedContext) -> list[int]:
    """This rank's shards (``i % world_size == rank``) that are not complete yet."""
    return [index for index in range(ctx.rank, plan.num_shards, ctx.world_size) if not writer.is_complete(out, index)]


def planned_items(plan: Plan, pending: list[int]) -> list[tuple[int, SampleRef]]:
    """``(shard index, sample reference)`` of every planned sample of the ``pending`` shards, in order."""
    return [(index, ref) for index in pending for ref in plan.shard_samples(index)]


def encode_shards(
    out: Path,
    plan: Plan,
    pending: list[int],
    prepared: Dataset,
    encode_batch: EncodeBatch,
    fingerprint: str,
    batch_size: int,
    workers: int,
    progress: bool = True,
    label: str = "precompute",
) -> int:
    """Encode the ``pending`` shards and write each as soon as its last sample is done; returns samples written.

    Args:
        out: the output folder.
        plan: the run's plan.
        pending: shard indices to write (:func:`pending_shards`).
        prepared: item ``i`` prepares ``planned_items(plan, pending)[i]`` (see the module docstring).
        encode_batch: the teacher hook: the valid prepared items of a batch -> their shard samples
            (``webdataset`` dicts of bytes with ``__key__``), in the same order.
        fingerprint: the plan's fingerprint, kept in each part record.
        batch_size: prepared items per teacher call.
        workers: DataLoader processes preparing items.
        progress: show a progress bar.
        label: the progress bar's name.
    """
    expected = {index: len(plan.shard_samples(index)) for index in pending}
    if len(prepared) != sum(expected.values()):
        raise ValueError(f"prepared: {len(prepared)} items for {sum(expected.values())} planned samples")
    done = dict.fromkeys(pending, 0)
    encoded: dict[int, list[dict]] = {index: [] for index in pending}
    skipped: dict[int, list[dict]] = {index: [] for index in pending}
    dropped: dict[int, dict[str, dict[str, int]]] = {index: {} for index in pending}
    loader = DataLoader(prepared, batch_size=batch_size, num_workers=workers, collate_fn=list,
                        worker_init_fn=loader_worker_init)  # workers never keep the folder's lock
    written = 0
    bar = tqdm(total=len(prepared), unit="img", desc=label, disable=not progress)
    for batch in loader:
        valid = [item for item in batch if "skip" not in item]
        samples = encode_batch(valid) if valid else []
        if len(samples) != len(valid):
            raise ValueError(f"encode_batch gave {len(samples)} samples for {len(valid)} items")
        for item, sample in zip(valid, samples):
            encoded[item["shard"]].append(sample)
            if item.get("annotations_dropped"):
                dropped[item["shard"]][item["key"]] = item["annotations_dropped"]
        for item in batch:
            index = item["shard"]
            if "skip" in item:
                warn(f"skipped {item['key']} ({item['source']}): {item['skip']}")
                skipped[index].append({"key": item["key"], "source": item["source"], "reason": item["skip"]})
            done[index] += 1
            if done[index] == expected[index]:
                writer.write_shard(out, index, encoded.pop(index), skipped.pop(index), fingerprint, dropped.pop(index))
        written += len(valid)
        bar.update(len(batch))
    bar.close()
    return written


def finish(out: Path, run: dict, plan: Plan, ctx: DistributedContext, extra: dict | None = None) -> dict:
    """After every rank wrote its shards: rank 0 merges ``manifest.json`` (with ``extra``'s fields); every rank
    returns it."""
    ctx.barrier()
    if ctx.is_main:
        writer.merge_manifest(out, run, plan.num_shards, [skip.as_dict() for skip in plan.skipped], extra)
    ctx.barrier()
    return shards.read_manifest(out)
