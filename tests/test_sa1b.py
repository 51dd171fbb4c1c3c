"""SA-1B reading, subset choice, and the sample-data builder."""

import tarfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mobilesam_srw.data_prep.plan import make_plan
from mobilesam_srw.data_prep.sa1b import discover_sources, load_sample, scan_tar
from mobilesam_srw.data_prep.subset import Subset, choose, parse_subset
from mobilesam_srw.errors import SrwError


def test_sample_data_is_sa1b_format(sample_sa1b):
    tars = sorted(sample_sa1b.glob("*.tar"))
    assert [t.name for t in tars] == ["sa_000000.tar", "sa_000001.tar", "sa_000002.tar"]
    refs, skipped = scan_tar(tars[0])
    assert len(refs) == 4 and not skipped
    image, record = load_sample(refs[0])
    assert image.dtype == np.uint8 and image.shape[2] == 3 and max(image.shape[:2]) <= 256
    assert record["image"]["file_name"] == f"{refs[0].key}.jpg"
    assert (record["image"]["height"], record["image"]["width"]) == image.shape[:2]
    for annotation in record["annotations"]:
        mask = mask_utils.decode({"size": annotation["segmentation"]["size"],
                                  "counts": annotation["segmentation"]["counts"].encode()})
        assert mask.shape == image.shape[:2] and mask.sum() == annotation["area"] > 0
        x, y = annotation["point_coords"][0]
        assert mask[int(y), int(x)] == 1


def test_extracted_folder_and_mixed_inputs(sample_sa1b, tmp_path):
    with tarfile.open(sample_sa1b / "sa_000001.tar") as archive:
        archive.extractall(tmp_path, filter="data")
    sources = discover_sources([tmp_path, str(sample_sa1b / "sa_000000.tar")])
    assert [t.name for t in sources.tars] == ["sa_000000.tar"]
    assert len(sources.loose) == 4 and not sources.skipped
    image, _ = load_sample(sources.loose[0])
    assert image.ndim == 3


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
    plan = make_plan([sample_sa1b], Subset(fraction=1.0), seed=0, shard_size=5, limit=7)
    assert len(plan.samples) == 7 and plan.num_shards == 2
    assert [len(plan.shard_samples(i)) for i in range(2)] == [5, 2]
    listed = tmp_path / "list.txt"
    listed.write_text("sa_000002.tar\n")
    plan = make_plan([sample_sa1b], parse_subset(str(listed)), seed=0, shard_size=4)
    assert plan.sources == ["sa_000002.tar"] and len(plan.samples) == 4
    listed.write_text("sa_000009.tar\n")
    with pytest.raises(SrwError, match="not in the input"):
        make_plan([sample_sa1b], parse_subset(str(listed)), seed=0, shard_size=4)
