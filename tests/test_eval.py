"""srw-sam eval: teacher masks equal SamPredictor's, IoU rules, quartiles, the report, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate
from mobilesam_srw.eval.sam.grid import grid_points
from mobilesam_srw.eval.sam.metrics import paired_iou, prompt_quartiles
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.teachers.loading import decoder_sam, prompt_and_decoder
from mobilesam_srw.sam.teachers.sam_vit import TINY_TEACHER_FILE, load_tiny_teacher

from conftest import assert_one_line_error, free_port, original_images, precompute_tiny, read_all, run_cli


def test_teacher_masks_equal_sam_predictor_end_to_end(sample_sa1b, tmp_path):
    precompute_tiny(sample_sa1b, tmp_path, dtype="fp32", limit=2)
    stored = read_all(tmp_path)
    reference = SamPredictor(load_tiny_teacher(tmp_path / TINY_TEACHER_FILE))
    ours = EmbeddingPredictor(decoder_sam(tmp_path / TINY_TEACHER_FILE, 256))
    for key in list(original_images(sample_sa1b))[:2]:
        # The teacher embedded the stored pixels (the resized image after its JPEG round trip), so SamPredictor
        # run end to end on those pixels must give the masks we get from the stored embedding.
        sample = stored[key]
        image = sample.image
        points = grid_points(3, image.shape[:2])
        reference.set_image(image)
        ours.set_embedding(torch.from_numpy(sample.embedding), image.shape[:2], sample.meta["input_size"])
        masks, scores = next(ours.point_batches(points, batch_size=len(points)))
        for index, point in enumerate(points):
            expected_masks, expected_scores, _ = reference.predict(point_coords=point[None], point_labels=np.array([1]),
                                                                   multimask_output=True)
            np.testing.assert_allclose(scores[index].numpy(), expected_scores, atol=1e-4)
            assert (masks[index].numpy() != expected_masks).mean() < 1e-3


def test_mask_iou_rules():
    empty = torch.zeros(2, 4, 4, dtype=torch.bool)
    full = torch.ones(2, 4, 4, dtype=torch.bool)
    half = full.clone()
    half[:, :2] = False
    assert mask_iou(empty, empty).tolist() == [1.0, 1.0]
    assert mask_iou(empty, full).tolist() == [0.0, 0.0]
    assert mask_iou(half, full).tolist() == [0.5, 0.5]


def test_match_modes():
    teacher = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    teacher[0, 0, 0, 0] = teacher[0, 1, 0] = teacher[0, 2] = True  # areas 1, 2, 4
    student = teacher.flip(1)  # areas 4, 2, 1
    teacher_scores, student_scores = torch.tensor([[0.1, 0.9, 0.2]]), torch.tensor([[0.1, 0.2, 0.9]])
    assert paired_iou(teacher, teacher_scores, student, student_scores, "all").tolist() == [[0.25, 1.0, 0.25]]
    assert paired_iou(teacher, teacher_scores, student, student_scores, "teacher-best").tolist() == [[1.0]]
    assert paired_iou(teacher, teacher_scores, student, student_scores, "own-best").tolist() == [[0.5]]


def test_prompt_quartiles_follow_patch_avesim():
    avesim = np.arange(16, dtype=np.float32).reshape(4, 4)  # 64 x 64 input, 4 x 4 patches
    points = np.array([[8, 8], [56, 56], [8, 40], [40, 24]])  # patches (0,0)=0, (3,3)=15, (2,0)=8, (1,2)=6
    assert prompt_quartiles(points, avesim, (64, 64)).tolist() == [0, 3, 2, 1]
    # patches wholly on padding do not move the edges: a 32-px-high image uses rows 0-1 only
    assert prompt_quartiles(np.array([[8, 8], [56, 24]]), avesim, (32, 64)).tolist() == [0, 3]


def test_eval_report(tiny_shards, two_runs, tmp_path):
    summary = evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / "report",
                                  grids=[2, 4], limit=2, progress=False, device="cpu"))
    assert summary["runs"] == ["mse", "srw"] and summary["images"] == 2
    for run in ("mse", "srw"):
        for grid, prompts in (("2", 2 * 4 * 3), ("4", 2 * 16 * 3)):
            assert 0 <= summary["miou"][run][grid] <= 100 and summary["prompts"][run][grid] == prompts
            assert len(summary["miou_by_quartile"][run][grid]) == 4
    rows = list(csv.DictReader((tmp_path / "report" / "per_image.csv").open()))
    assert len(rows) == 2 * 2 * 2
    pooled = np.mean([float(r["miou"]) for r in rows if r["run"] == "mse" and r["grid"] == "4"])
    assert pooled == pytest.approx(summary["miou"]["mse"]["4"], abs=1e-3)  # equal prompt counts per image
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| Method | 2x2 points | 4x4 points |" in table and "Δ (srw - mse)" in table and "Q1 (tail)" in table
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["match"] == "all"


def test_student_equal_to_teacher_scores_100(tiny_shards):
    """A 'student' whose embedding is the teacher's own gives IoU 1: checks the pairing end to end."""
    from mobilesam_srw import shards
    from mobilesam_srw.eval.sam import grid as grid_eval

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    decoder = prompt_and_decoder(tiny_shards / TINY_TEACHER_FILE)  # read once, shared
    predictors = {}
    for run in ("teacher", "same"):
        predictors[run] = EmbeddingPredictor(decoder_sam(decoder, 256))
        predictors[run].set_embedding(torch.from_numpy(sample.embedding), sample.meta["original_size"],
                                      sample.meta["input_size"])
    results = grid_eval.evaluate_image(sample, predictors, [3], "all")
    assert results[0]["iou_sum"] / results[0]["count"] == pytest.approx(1.0)


@pytest.mark.slow
def test_bad_eval_input(tiny_shards, two_runs, tmp_path):
    out = tmp_path / "report"
    assert_one_line_error(run_cli("eval", "--shards", tiny_shards, "--student", two_runs[0], "--grid", "0",
                                  "--out", out), "--grid must be >= 1")
    assert_one_line_error(run_cli("eval", "--shards", str(tmp_path / "no*.tar"), "--student", two_runs[0],
                                  "--out", out), "no shards match")
    wide = tmp_path / "wide"
    checkpoint.save(wide / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student("tinyvit-micro", 512)))
    assert_one_line_error(run_cli("eval", "--shards", tiny_shards, "--student", wide, "--out", out),
                          "gives embeddings [256, 32, 32] but the teacher's are [256, 16, 16]")
    assert not out.exists()


def test_gt_mode_scores_teacher_and_students(tiny_shards, two_runs, tmp_path):
    for prompt in ("center", "box"):
        summary = evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / prompt, mode="gt",
                                      prompt=prompt, limit=2, progress=False, device="cpu"))
        assert set(summary["miou"]) == {"teacher", "mse", "srw"} and summary["masks"] > 0
        assert all(0 <= value <= 100 for value in summary["miou"].values())
        assert "| teacher |" in (tmp_path / prompt / "table.md").read_text()


def test_gt_masks_are_the_annotations(tiny_shards):
    from pycocotools import mask as mask_utils

    from mobilesam_srw import shards
    from mobilesam_srw.eval.sam.gt import ground_truth

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    masks, boxes, clicks = ground_truth(sample)
    annotations = sample.meta["annotations"]
    assert len(masks) == len(annotations) and masks.shape[1:] == tuple(sample.meta["original_size"])
    first = annotations[0]
    assert masks[0].sum().item() == first["area"]
    x, y, w, h = first["bbox"]
    assert boxes[0].tolist() == [x, y, x + w, y + h] and clicks[0].tolist() == first["point_coords"][0]
    rle = {"size": first["segmentation"]["size"], "counts": first["segmentation"]["counts"].encode()}
    assert (masks[0].numpy() == mask_utils.decode(rle).astype(bool)).all()


def test_everything_mode_matches_and_buckets(tiny_shards, two_runs, tmp_path):
    summary = evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path, mode="everything",
                                  grids=[4], pred_iou_thresh=0.0, stability_thresh=0.0, limit=1, progress=False,
                                  device="cpu"))
    for run in ("mse", "srw"):
        values = summary["results"][run]
        assert values["teacher_masks"] > 0 and set(values["recall"]) == {"small", "medium", "large", "all"}
        assert values["matched_miou"] is None or 0 <= values["matched_miou"] <= 100
    assert "recall small" in (tmp_path / "table.md").read_text()
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert {row["run"] for row in rows} == {"mse", "srw"}


def test_size_buckets_use_coco_thresholds_at_input_scale():
    from mobilesam_srw.eval.sam.everything import size_bucket

    assert size_bucket(31 ** 2, (1024, 1024), 1024) == "small"
    assert size_bucket(95 ** 2, (1024, 1024), 1024) == "medium"
    assert size_bucket(96 ** 2, (1024, 1024), 1024) == "large"
    assert size_bucket(62 ** 2, (2048, 1500), 1024) == "small"  # 31 px at the 1024-px scale


@pytest.mark.slow
def test_two_gloo_ranks_merge_to_the_single_process_report(tiny_shards, two_runs, tmp_path):
    import os
    import subprocess
    import sys

    single = evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / "single", grids=[2, 3],
                                 limit=3, progress=False, device="cpu"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               "-m", "mobilesam_srw", "eval", "--shards", str(tiny_shards), "--student", *map(str, two_runs),
               "--grid", "2", "3", "--limit", "3", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "ranks")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = json.loads((tmp_path / "ranks" / "summary.json").read_text())
    assert merged["images"] == 3 and merged["prompts"] == single["prompts"]
    for run in ("mse", "srw"):
        for grid in ("2", "3"):
            assert merged["miou"][run][grid] == pytest.approx(single["miou"][run][grid], abs=1e-4)
    rows = list(csv.DictReader((tmp_path / "ranks" / "per_image.csv").open()))
    assert len(rows) == 3 * 2 * 2


def test_old_manifests_keep_working(tiny_shards, two_runs, tmp_path):
    """Shards of a precompute before the teacher registry (no input_size, embedding_shape, preprocessing in
    the teacher record) get SAM's preprocessing and their manifest's input size: eval, train and heatmap run."""
    import shutil

    from mobilesam_srw import shards
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.sam.preprocessing import SamPreprocessing
    from mobilesam_srw.sam.teachers.shards import complete_record, shard_teacher
    from mobilesam_srw.sam.train import SamTrainConfig, train
    from mobilesam_srw.viz.sam.heatmap import HeatmapConfig, draw_heatmaps

    old = tmp_path / "old"
    shutil.copytree(tiny_shards, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["teacher"] = {key: manifest["teacher"][key] for key in ("type", "checkpoint", "checkpoint_sha256",
                                                                     "sam_config")}
    (old / "manifest.json").write_text(json.dumps(manifest))
    teacher = shard_teacher(shards.shard_paths([old]))
    assert (teacher.spec.input_size, teacher.patch_size, teacher.record["embedding_shape"]) == (256, 16, [256, 16, 16])
    assert isinstance(teacher.preprocessing, SamPreprocessing)
    summary = evaluate(EvalConfig(shards=[str(old)], students=two_runs, out=tmp_path / "report", grids=[2], limit=1,
                                  progress=False, device="cpu"))
    assert summary["teacher"]["preprocessing"] == "sam" and 0 <= summary["miou"]["mse"]["2"] <= 100
    train(SamTrainConfig(shards=[str(old)], out=tmp_path / "run", student="tinyvit-micro", batch_size=2, epochs=1,
                      max_steps=1, workers=0, progress=False, device="cpu"))
    assert draw_heatmaps(HeatmapConfig(shards=[str(old)], out=tmp_path / "figures", first=1))
    (old / "manifest.json").unlink()  # no manifest at all: SAM's layout from the embedding shape
    assert shard_teacher(shards.shard_paths([old])).spec.input_size == 256
    with pytest.raises(SrwError, match="--sam-checkpoint is required"):
        shard_teacher(shards.shard_paths([old])).checkpoint(None)
    with pytest.raises(SrwError, match="rerun srw-sam precompute"):
        complete_record({"type": "litemedsam", "checkpoint": "lite_medsam.pth", "checkpoint_sha256": None})


def test_shards_of_two_teachers_are_refused(tiny_shards, tmp_path):
    import shutil

    from mobilesam_srw import shards
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.sam.teachers.shards import shard_teacher

    other = tmp_path / "other"
    shutil.copytree(tiny_shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["teacher"]["checkpoint_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SrwError, match="different teachers"):
        shard_teacher(shards.shard_paths([tiny_shards, other]))


def test_gt_box_mode_scores_students_against_the_teacher(tiny_shards, tmp_path):
    """A 'student' whose embedding is the teacher's own scores 100 against the teacher, and the teacher's
    own IoU against the annotations."""
    from mobilesam_srw import shards
    from mobilesam_srw.eval.sam.gt import evaluate_image_gt, summarize_gt

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    decoder = decoder_sam(tiny_shards / TINY_TEACHER_FILE, 256)
    predictors = {}
    for run in ("teacher", "same"):
        predictors[run] = EmbeddingPredictor(decoder)
        predictors[run].set_embedding(torch.from_numpy(sample.embedding), sample.meta["original_size"],
                                      sample.meta["input_size"])
    rows = evaluate_image_gt(sample, predictors, "box", points_per_batch=2)  # batches of 2 of the 5 boxes
    summary, table = summarize_gt(rows, ["same"], "box")
    assert summary["miou_vs_teacher"]["same"] == pytest.approx(100.0)
    assert summary["miou"]["same"] == pytest.approx(summary["miou"]["teacher"])
    assert summary["masks"] == len(sample.meta["annotations"]) and "| same |" in table


def test_teacher_box_prompts_come_from_the_teachers_masks(tiny_shards, two_runs, tmp_path):
    """Boxes of the teacher's masks for a grid of boxes: inside the image, deterministic, no duplicates; a student
    whose embedding is the teacher's scores 100; the report."""
    from mobilesam_srw import shards
    from mobilesam_srw.eval.sam.boxes import cell_boxes, evaluate_image_teacher_boxes, teacher_boxes

    np.testing.assert_array_equal(cell_boxes(10, 20, 2), [[0, 0, 10, 5], [10, 0, 20, 5], [0, 5, 10, 10],
                                                          [10, 5, 20, 10]])
    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    decoder = decoder_sam(tiny_shards / TINY_TEACHER_FILE, 256)
    predictors = {}
    for run in ("teacher", "same"):
        predictors[run] = EmbeddingPredictor(decoder)
        predictors[run].set_embedding(torch.from_numpy(sample.embedding), sample.meta["original_size"],
                                      sample.meta["input_size"])
    boxes = teacher_boxes(predictors["teacher"], 3)
    height, width = sample.meta["original_size"]
    assert 0 < len(boxes) <= 9 and (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    np.testing.assert_array_equal(teacher_boxes(predictors["teacher"], 3, batch_size=2), boxes)
    (row,) = evaluate_image_teacher_boxes(sample, predictors, 3, points_per_batch=2)
    assert row["count"] == len(boxes) and row["teacher_iou_sum"] == pytest.approx(len(boxes))
    summary = evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / "box",
                                  mode="teacher-box", box_grid=2, limit=2, progress=False, device="cpu"))
    assert set(summary["miou_vs_teacher"]) == {"mse", "srw"} and summary["boxes"] > 0
    assert all(0 <= value <= 100 for value in summary["miou_vs_teacher"].values())
    table = (tmp_path / "box" / "table.md").read_text()
    assert "a 2x2 grid of boxes" in table and "| srw |" in table
    assert sorted(path.name for path in (tmp_path / "box").iterdir()) == ["per_image.csv", "summary.json", "table.md"]
