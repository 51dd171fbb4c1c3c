"""SA-1B reading, subset choice, and the sample-data builder."""

import os
import shutil
import tarfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mobilesam_srw.data_prep.plan import make_plan
from mobilesam_srw.data_prep.sam import sa1b
from mobilesam_srw.data_prep.sam.sa1b import scan_tar
from mobilesam_srw.data_prep.sources import ImageLimits
from mobilesam_srw.data_prep.subset import Subset, choose, parse_subset
from mobilesam_srw.errors import SrwError


def plan_of(paths, subset, **options):
    return make_plan(sa1b.discover(paths), subset, seed=0, **options)


def test_sample_data_is_sa1b_format(sample_sa1b):
    tars = sorted(sample_sa1b.glob("*.tar"))
    assert [t.name for t in tars] == ["sa_000000.tar", "sa_000001.tar", "sa_000002.tar"]
    refs, skipped = scan_tar(tars[0])
    assert len(refs) == 4 and not skipped
    loaded = refs[0].load(ImageLimits())
    image = loaded.rgb
    assert image.dtype == np.uint8 and image.shape[2] == 3 and max(image.shape[:2]) <= 256
    assert loaded.image["file_name"] == f"{refs[0].key}.jpg"
    assert (loaded.image["height"], loaded.image["width"]) == image.shape[:2]
    assert loaded.annotations and not loaded.dropped
    for annotation in loaded.annotations:
        mask = mask_utils.decode({"size": annotation["segmentation"]["size"],
                                  "counts": annotation["segmentation"]["counts"].encode()})
        assert mask.shape == image.shape[:2] and mask.sum() == annotation["area"] > 0
        x, y = annotation["point_coords"][0]
        assert mask[int(y), int(x)] == 1


def test_extracted_folder_and_mixed_inputs(sample_sa1b, tmp_path):
    with tarfile.open(sample_sa1b / "sa_000001.tar") as archive:
        archive.extractall(tmp_path, filter="data")
    discovery = sa1b.discover([tmp_path, str(sample_sa1b / "sa_000000.tar")])
    assert [(u.name, u.granularity) for u in discovery.units if u.granularity == "tar"] == [("sa_000000.tar", "tar")]
    loose = [u for u in discovery.units if u.granularity == "sample"]
    assert len(loose) == 4 and not discovery.skipped
    refs, _ = loose[0].scan()
    assert refs[0].load(ImageLimits()).rgb.ndim == 3
    plan = make_plan(discovery, Subset(fraction=1.0), seed=0, shard_size=4)
    assert len(plan.samples) == 8 and plan.sources == ["sa_000000.tar", str(tmp_path)]


def test_parse_subset(tmp_path):
    assert parse_subset("1%") == Subset(fraction=0.01)
    assert parse_subset("all") == Subset(fraction=1.0)
    names = tmp_path / "names.txt"
    names.write_text("sa_000020.tar  # EdgeSAM's first\n\nsa_000021.tar\n")
    assert parse_subset(str(names)).names == {"sa_000020.tar", "sa_000021.tar"}
    for bad in ("0%", "150%", "x%", "missing.txt"):
        with pytest.raises(SrwError, match="--subset"):
            parse_subset(bad)


def test_choose_is_deterministic_and_order_free():
    names = [f"sa_{i:06d}.tar" for i in range(1000)]
    chosen = choose(names, Subset(fraction=0.01), seed=0)
    assert len(chosen) == 10
    assert choose(list(reversed(names)), Subset(fraction=0.01), seed=0) == chosen
    assert choose(names, Subset(fraction=0.01), seed=1) != chosen
    assert choose(names[:5], Subset(fraction=0.01), seed=0)  # at least one
    assert chosen <= choose(names + ["sa_001000.tar"], Subset(fraction=0.011), seed=0)


def test_plan_limits_and_listed_subset(sample_sa1b, tmp_path):
    plan = plan_of([sample_sa1b], Subset(fraction=1.0), shard_size=5, limit=7)
    assert len(plan.samples) == 7 and plan.num_shards == 2
    assert [len(plan.shard_samples(i)) for i in range(2)] == [5, 2]
    listed = tmp_path / "list.txt"
    listed.write_text("sa_000002.tar\n")
    plan = plan_of([sample_sa1b], parse_subset(str(listed)), shard_size=4)
    assert plan.sources == ["sa_000002.tar"] and len(plan.samples) == 4
    listed.write_text("sa_000009.tar\n")
    with pytest.raises(SrwError, match="not in the input"):
        plan_of([sample_sa1b], parse_subset(str(listed)), shard_size=4)


def test_loose_folder_skips_non_regular_files_unopened(sample_sa1b, tmp_path):
    with tarfile.open(sample_sa1b / "sa_000001.tar") as archive:
        archive.extractall(tmp_path, filter="data")
    jpgs = sorted(tmp_path.glob("sa_*.jpg"))
    jpgs[0].unlink()
    os.mkfifo(jpgs[0])  # opening it for reading would block forever
    discovery = sa1b.discover([tmp_path])
    reasons = {(s.key, s.reason) for s in discovery.skipped}
    assert (jpgs[0].name, "not a regular file (a FIFO)") in reasons
    assert (jpgs[0].stem, "missing jpg") in reasons
    assert len(discovery.units) == 3


def test_unsafe_and_duplicate_keys_are_skipped(sample_sa1b, tmp_path):
    long_key = "sa_" + "1" * 130
    shutil.copy(sample_sa1b / "sa_000000.tar", tmp_path / "sa_000000.tar")
    with tarfile.open(sample_sa1b / "sa_000000.tar") as archive:
        archive.extractall(tmp_path / "loose", filter="data")
    first = sorted((tmp_path / "loose").glob("sa_*.jpg"))[0]
    first.rename(first.with_name(f"{long_key}.jpg"))
    first.with_suffix(".json").rename(first.with_name(f"{long_key}.json"))
    plan = plan_of([tmp_path, tmp_path / "loose"], Subset(fraction=1.0), shard_size=4)
    reasons = [s.reason for s in plan.skipped]
    assert reasons.count("duplicate key (already taken from another source)") == 3
    assert any(s.key.startswith("sa_1111") and "stray member" in s.reason for s in plan.skipped)  # too long a key
    assert len(plan.samples) == 4 and all(s.source == "sa_000000.tar" for s in plan.samples)
