"""Output side of precompute: complete shards, their part records, and the merged manifest.

Layout of an output folder::

    precompute.json          the run's identity (teacher, input size, dtype, plan fingerprint)
    shard-000000.tar ...     WebDataset shards (format: mobilesam_srw.shards)
    parts/shard-000000.json  per shard: keys written, samples skipped, annotations dropped; after its tar
    teacher_tiny.pth         only for --teacher tiny: the random teacher, for eval
    manifest.json            written last, when every shard is complete
    val/                     with --val-fraction or --val-keys (default place): the held-out split,
                             the same layout, the same teacher

A shard counts as complete when its part record exists; both are written atomically.
"""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path

import webdataset as wds

from mobilesam_srw import shards
from mobilesam_srw.atomic import atomic_file, output_subfolder, read_json, write_json

RUN_FILE = shards.RUN_FILE
PARTS_DIR = "parts"


def shard_name(index: int) -> str:
    return shards.SHARD_PATTERN.format(index=index)


def part_path(out: Path, index: int) -> Path:
    return out / PARTS_DIR / f"{Path(shard_name(index)).stem}.json"


def is_complete(out: Path, index: int) -> bool:
    return part_path(out, index).is_file() and (out / shard_name(index)).is_file()


def write_shard(
    out: Path,
    index: int,
    samples: list[dict],
    skipped: list[dict],
    fingerprint: str,
    annotations_dropped: dict[str, dict[str, int]] | None = None,
) -> int:
    """Write shard ``index`` then its part record; returns the shard's size in bytes.

    Args:
        out: the output folder.
        index: the shard's index in the plan.
        samples: encoded samples (``shards.encode_sample``), in plan order.
        skipped: ``{"key", "source", "reason"}`` of the shard's planned samples left out.
        fingerprint: the plan's fingerprint.
        annotations_dropped: sample key -> invalid annotations left out, counted by reason.
    """
    path = out / shard_name(index)
    with atomic_file(path) as stream:
        with wds.TarWriter(stream, encoder=False, mtime=0) as writer:
            for sample in samples:
                writer.write(sample)
    size = path.stat().st_size
    output_subfolder(out / PARTS_DIR)  # a link planted as parts/ is refused, never written through
    write_json(
        part_path(out, index),
        {
            "shard": path.name,
            "fingerprint": fingerprint,
            "keys": [sample["__key__"] for sample in samples],
            "skipped": skipped,
            "annotations_dropped": annotations_dropped or {},
            "bytes": size,
        },
    )
    return size


def merge_manifest(out: Path, run: dict, num_shards: int, plan_skipped: list[dict], extra: dict | None = None) -> dict:
    """Merge every part record into ``manifest.json`` (and ``extra``'s fields after the run's); all shards must be
    complete."""
    parts = [read_json(part_path(out, index)) for index in range(num_shards)]
    skipped = plan_skipped + [skip for part in parts for skip in part["skipped"]]
    dropped_by_sample = {key: counts for part in parts for key, counts in part.get("annotations_dropped", {}).items()}
    by_reason: Counter[str] = Counter()
    for counts in dropped_by_sample.values():
        by_reason.update(counts)
    manifest = {
        "format_version": shards.FORMAT_VERSION,
        **run,
        **(extra or {}),
        "samples_written": sum(len(part["keys"]) for part in parts),
        "samples_skipped": len(skipped),
        "bytes": sum(part["bytes"] for part in parts),
        "shards": [{"name": part["shard"], "samples": len(part["keys"]), "bytes": part["bytes"]} for part in parts],
        "skipped": skipped,
        "annotations_dropped": {"total": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items())),
                                "by_sample": dropped_by_sample},
        "completed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / shards.MANIFEST_NAME, manifest)
    return manifest
