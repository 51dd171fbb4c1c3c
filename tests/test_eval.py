"""srw-sam eval: teacher masks equal SamPredictor's, IoU rules, quartiles, the report, bad input; the exact
sparse upscale equal to SamPredictor's full-size masks."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

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

from conftest import assert_one_line_error, free_port, original_images, precompute_tiny, read_all


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
    from conftest import run_in_process

    out = tmp_path / "report"
    assert_one_line_error(run_in_process("eval", "--shards", tiny_shards, "--student", two_runs[0], "--grid", "0",
                                  "--out", out), "--grid must be >= 1")
    assert_one_line_error(run_in_process("eval", "--shards", str(tmp_path / "no*.tar"), "--student", two_runs[0],
                                  "--out", out), "no shards match")
    wide = tmp_path / "wide"
    checkpoint.save(wide / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student("tinyvit-micro", 512)))
    assert_one_line_error(run_in_process("eval", "--shards", tiny_shards, "--student", wide, "--out", out),
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


def _teacher_twice(tiny_shards) -> tuple:
    """The first shard sample and two predictors on its stored embedding: "teacher", and "same" (a student
    whose embedding is the teacher's)."""
    from mobilesam_srw import shards

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    decoder = decoder_sam(tiny_shards / TINY_TEACHER_FILE, 256)
    predictors = {}
    for run in ("teacher", "same"):
        predictors[run] = EmbeddingPredictor(decoder)
        predictors[run].set_embedding(torch.from_numpy(sample.embedding), sample.meta["original_size"],
                                      sample.meta["input_size"])
    return sample, predictors


def test_gt_box_mode_scores_students_against_the_teacher(tiny_shards, tmp_path):
    """A 'student' whose embedding is the teacher's own scores 100 against the teacher, and the teacher's
    own IoU against the annotations."""
    from mobilesam_srw.eval.sam.gt import evaluate_image_gt, summarize_gt

    sample, predictors = _teacher_twice(tiny_shards)
    rows = evaluate_image_gt(sample, predictors, "box", points_per_batch=2)  # batches of 2 of the 5 boxes
    summary, table = summarize_gt(rows, ["same"], "box")
    assert summary["miou_vs_teacher"]["same"] == pytest.approx(100.0)
    assert summary["miou"]["same"] == pytest.approx(summary["miou"]["teacher"])
    assert summary["masks"] == len(sample.meta["annotations"]) and "| same |" in table


# --- the exact sparse upscale (issue 21): equal to SamPredictor's full-size masks, bit for bit -----------------

def _postprocess(encoder_size: int):
    """segment-anything's ``Sam.postprocess_masks`` for an encoder of this size (only its img_size is read)."""
    from segment_anything.modeling import Sam

    owner = SimpleNamespace(image_encoder=SimpleNamespace(img_size=encoder_size))
    return lambda masks, input_size, original_size: Sam.postprocess_masks(owner, masks, input_size, original_size)


FRAMES = [  # (low-res side, encoder size, input size, original size)
    (256, 256, (171, 256), (600, 900)),  # LiteMedSAM: the first resize is a copy
    (64, 256, (171, 256), (437, 655)),  # SAM's layout (the tiny teacher): 64 -> 256, crop, -> original
    (64, 256, (256, 193), (1001, 755)),  # portrait, odd sizes
    (64, 256, (256, 256), (120, 120)),  # an image smaller than the input: the second resize shrinks
]


def _logit_sets(low: int) -> list[torch.Tensor]:
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, low, low, generator=generator) * 4
    smooth = F.interpolate(torch.randn(3, 1, 6, 6, generator=generator) * 6 + 1, (low, low), mode="bilinear")[:, 0]
    edge_cases = torch.stack([torch.full((low, low), -3.0), torch.full((low, low), 2.0),
                              torch.full((low, low), 1e-35)])  # none, all, and positive but tiny
    return [noisy, smooth.contiguous(), edge_cases]


@pytest.mark.parametrize("frame_sizes", FRAMES, ids=["copy-first", "sam", "portrait", "shrink"])
def test_sparse_upscale_equals_postprocess_masks(frame_sizes):
    from mobilesam_srw.eval.sam.tiles import TiledMasks
    from mobilesam_srw.eval.sam.tiles import paired_iou as tiled_iou
    from mobilesam_srw.eval.sam.upscale import UpscaleFrame

    low, encoder, input_size, original_size = frame_sizes
    postprocess = _postprocess(encoder)
    frame = UpscaleFrame.calibrated(postprocess, (low, low), encoder, input_size, original_size)
    assert frame is not None, "ATen's bilinear arithmetic not reproduced on this machine"
    for logits in _logit_sets(low):
        expected = postprocess(logits[:, None], input_size, original_size)[:, 0] > 0
        tiled = TiledMasks.from_logits(frame, logits)
        assert torch.equal(tiled.to_dense(original_size), expected)
        assert torch.equal(tiled.areas(), expected.flatten(1).sum(1, dtype=torch.int32))
        other = torch.roll(torch.arange(len(logits)), 1)
        assert torch.equal(tiled_iou(tiled, tiled.select(other)), mask_iou(expected, expected[other]))
        dense = TiledMasks.from_dense(expected, frame.tile)
        assert torch.equal(dense.to_dense(original_size), expected)
        assert torch.equal(tiled_iou(dense, tiled.select(other)), mask_iou(expected, expected[other]))


@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_upscale_follows_atens_kernel_choice(threads):
    """ATen resizes SAM's 3 masks of a prompt with its channels-last kernel (four corner terms) when it runs on
    one thread, and with its generic kernel (nested blends) otherwise, or for one mask: other numbers in the
    last bits. Each frame calibrates with the call's channels and thread count, and the masks stay equal."""
    from mobilesam_srw.eval.sam.tiles import MaskTiler

    model = SimpleNamespace(postprocess_masks=_postprocess(256), mask_threshold=0.0,
                            image_encoder=SimpleNamespace(img_size=256))
    import torch.nn.functional as F

    coarse = torch.randn(12, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 6 + 1
    logits = F.interpolate(coarse, (64, 64), mode="bilinear")[:, 0].view(4, 3, 64, 64)  # mask-like: sparse path
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tiler = MaskTiler(model)
        for channels, batch in ((3, logits), (1, logits[:, :1])):
            expected = model.postprocess_masks(batch, (171, 256), (437, 655)) > 0
            tiled = tiler(batch, (171, 256), (437, 655), channels=channels)
            assert torch.equal(tiled.to_dense((437, 655)), expected.flatten(0, 1))
            frame = tiler.frame((64, 64), (171, 256), (437, 655), torch.device("cpu"), channels)
            assert frame.arithmetic.kernel == ("corners" if threads == 1 and channels == 3 else "nested")
    finally:
        torch.set_num_threads(previous)


def test_masks_mostly_of_edges_are_upscaled_in_full(monkeypatch):
    """A random decoder's noisy masks are edge in nearly every tile: the sparse upscale would compute every
    pixel slowly, so they are upscaled in full (the same masks); mask-like logits take the sparse path."""
    import torch.nn.functional as F

    from mobilesam_srw.eval.sam.tiles import MaskTiler, TiledMasks

    model = SimpleNamespace(postprocess_masks=_postprocess(256), mask_threshold=0.0,
                            image_encoder=SimpleNamespace(img_size=256))
    generator = torch.Generator().manual_seed(2)
    noisy = torch.randn(2, 3, 64, 64, generator=generator) * 4
    smooth = F.interpolate(torch.randn(6, 1, 6, 6, generator=generator) * 6 + 1, (64, 64), mode="bilinear")
    sparse_calls = []
    from_logits = TiledMasks.from_logits.__func__
    monkeypatch.setattr(TiledMasks, "from_logits",
                        classmethod(lambda cls, *args, **kwargs: sparse_calls.append(1) or from_logits(cls, *args,
                                                                                                       **kwargs)))
    tiler = MaskTiler(model)
    for logits, sparse in ((noisy, False), (smooth.view(2, 3, 64, 64), True)):
        sparse_calls.clear()
        expected = model.postprocess_masks(logits, (171, 256), (437, 655)) > 0
        tiled = tiler(logits, (171, 256), (437, 655), channels=3)
        assert torch.equal(tiled.to_dense((437, 655)), expected.flatten(0, 1))
        assert bool(sparse_calls) == sparse


def test_fma32_rounds_once():
    """a*b + c with one rounding: a case where rounding the float64 sum to float32 rounds twice and errs."""
    from mobilesam_srw.eval.sam.upscale import fma32

    a, b, c = torch.tensor([(1 + 2**-10) * 2**-24]), torch.tensor([1 - 2**-10 + 2**-20]), torch.tensor([1.0])
    assert (a.double() * b.double() + c.double()).float().item() == 1.0  # double rounding: wrong
    assert fma32(a, b, c).item() == 1 + 2**-23  # exact: 1 + 2^-24 + 2^-54, above the tie
    x, y, z = (torch.randn(1000, generator=torch.Generator().manual_seed(s)) for s in range(3))
    assert torch.equal(fma32(x, y, torch.zeros_like(z)), x * y) and torch.equal(fma32(x, torch.ones_like(y), z), x + z)


def test_other_arithmetic_is_refused_and_upscaled_in_full():
    """A kernel the frame does not reproduce (here align_corners=True) gets no frame; MaskTiler then
    upscales in full and the IoUs stay exact."""
    import torch.nn.functional as F

    from mobilesam_srw.eval.sam.tiles import MaskTiler
    from mobilesam_srw.eval.sam.tiles import paired_iou as tiled_iou
    from mobilesam_srw.eval.sam.upscale import UpscaleFrame

    def other(masks, input_size, original_size):
        return F.interpolate(masks[..., : input_size[0], : input_size[1]], original_size, mode="bilinear",
                             align_corners=True)

    assert UpscaleFrame.calibrated(other, (64, 64), 64, (48, 64), (300, 400)) is None
    model = SimpleNamespace(postprocess_masks=other, mask_threshold=0.0, image_encoder=SimpleNamespace(img_size=64))
    logits = _logit_sets(64)[1]
    with pytest.warns(UserWarning, match="upscaled in full"):
        tiled = MaskTiler(model)(logits, (48, 64), (300, 400), channels=1)
    expected = other(logits[:, None], (48, 64), (300, 400))[:, 0] > 0
    assert torch.equal(tiled.to_dense((300, 400)), expected)
    assert torch.equal(tiled_iou(tiled, tiled.select(torch.tensor([2, 0, 1]))), mask_iou(expected, expected[[2, 0, 1]]))


def test_decode_gives_predict_torchs_low_res_logits(tiny_shards):
    from mobilesam_srw import shards

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    predictor = EmbeddingPredictor(decoder_sam(tiny_shards / TINY_TEACHER_FILE, 256))
    predictor.set_embedding(torch.from_numpy(sample.embedding), sample.meta["original_size"], sample.meta["input_size"])
    points = grid_points(3, tuple(sample.meta["original_size"]))
    logits, scores = next(predictor.point_logits(points, batch_size=9))
    masks, expected_scores, expected_logits = predictor.predict_torch(*predictor._point_prompts(points))
    assert torch.equal(logits, expected_logits) and torch.equal(scores, expected_scores)
    boxes = np.array([[10, 20, 120, 90], [0, 0, 50, 50]], dtype=np.float64)
    box_logits, _ = next(predictor.box_logits(boxes))
    _, _, expected_box_logits = predictor.predict_torch(None, None, boxes=predictor._box_prompts(boxes),
                                                        multimask_output=False)
    assert torch.equal(box_logits, expected_box_logits)


@pytest.mark.parametrize("mode, options", [("grid", dict(grids=[3, 4])), ("gt", dict(prompt="box")),
                                           ("gt", dict(prompt="center")),
                                           ("everything", dict(grids=[4], pred_iou_thresh=0.0, stability_thresh=0.0))],
                         ids=["grid", "gt-box", "gt-center", "everything"])
def test_sparse_masks_give_the_references_report(tiny_shards, two_runs, tmp_path, mode, options):
    """Every mode end to end: the fast path's summary and per-image rows equal the reference's (SAM's
    MaskDecoder, every mask upscaled in full): IoUs to :data:`IOU_TOLERANCE`, the rest value for value."""
    summaries = [evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / masks, mode=mode,
                                     masks=masks, limit=2, points_per_batch=5, progress=False, device="cpu", **options))
                 for masks in ("sparse", "full")]
    _assert_same_mious(summaries[0], summaries[1], tolerance=100 * IOU_TOLERANCE)  # percent
    rows = [list(csv.DictReader((tmp_path / masks / "per_image.csv").open())) for masks in ("sparse", "full")]
    _assert_same_rows(*rows)


def _assert_same_mious(ours, expected, tolerance: float) -> None:
    """Equal nested summaries, floats to ``tolerance``."""
    if isinstance(expected, dict):
        assert isinstance(ours, dict) and ours.keys() == expected.keys()
        for key in expected:
            _assert_same_mious(ours[key], expected[key], tolerance)
    elif isinstance(expected, (list, tuple)):
        assert len(ours) == len(expected)
        for one, other in zip(ours, expected):
            _assert_same_mious(one, other, tolerance)
    elif isinstance(expected, float):
        assert abs(ours - expected) <= tolerance, (ours, expected)
    else:
        assert ours == expected


# The sparse decoder's float rounding (sums in another order than SAM's MaskDecoder) flips the odd pixel whose
# upscaled logit is within rounding of 0: on the tiny random-weight fixture a prompt's IoU moved by up to 2e-5
# (mIoU 3e-6); on LiteMedSAM's real weights at 1500 x 2250 (bench_eval --vs-sam) 4.5e-5 and mIoU 1.9e-7.
IOU_TOLERANCE = 1e-4


def _assert_same_rows(ours: list[dict], expected: list[dict], per_prompt: float = IOU_TOLERANCE) -> None:
    """Equal per-image rows, their IoU sums to ``per_prompt`` x the row's count (printed mIoUs, in percent, to
    100 x ``per_prompt``), every other value exactly."""
    assert len(ours) == len(expected)
    for row, reference in zip(ours, expected):
        assert row.keys() == reference.keys()
        for key, value in reference.items():
            if key.endswith("iou_sum") and isinstance(value, float):
                assert abs(row[key] - value) <= per_prompt * max(row.get("count") or 1, 1), (key, row[key], value)
            elif key.endswith("iou_sum") and value not in ("", None):
                bound = per_prompt * max(int(row.get("count") or 1), 1)
                assert abs(float(row[key]) - float(value)) <= bound, (key, row[key], value)
            elif "iou" in key and value not in ("", None):  # a printed mIoU in percent, 4 decimals
                assert abs(float(row[key]) - float(value)) <= 100 * per_prompt + 1e-4, (key, row[key], value)
            else:
                assert row[key] == value, key


def _installed(tiny_shards, runs: int = 3) -> tuple:
    """The first shard sample and predictors on the tiny teacher's decoder: its stored embedding, then
    perturbed copies of it as students (masks near the teacher's, not equal)."""
    from mobilesam_srw import shards

    sample = next(shards.iterate_shards(shards.shard_paths([tiny_shards])))
    decoder = decoder_sam(tiny_shards / TINY_TEACHER_FILE, 256)
    generator = torch.Generator().manual_seed(0)
    predictors = {}
    for index in range(runs):
        embedding = torch.from_numpy(sample.embedding).float()
        embedding = embedding + 0.3 * index * embedding.std() * torch.randn(embedding.shape, generator=generator)
        predictors["teacher" if index == 0 else f"student{index}"] = predictor = EmbeddingPredictor(decoder)
        predictor.set_embedding(embedding, sample.meta["original_size"], sample.meta["input_size"])
    return sample, predictors


@pytest.mark.parametrize("match", ["all", "teacher-best", "own-best"])
def test_sparse_grid_rows_equal_the_reference_per_match(tiny_shards, match, monkeypatch):
    from mobilesam_srw.eval.sam import grid as grid_eval
    from mobilesam_srw.eval.sam.tiles import MaskTiler

    sample, predictors = _installed(tiny_shards)
    tiler = MaskTiler(predictors["teacher"].model)
    fast = grid_eval.evaluate_image(sample, predictors, [4], match, points_per_batch=6, tiler=tiler)
    reference = grid_eval.evaluate_image(sample, predictors, [4], match, points_per_batch=6)
    _assert_same_rows(fast, reference)  # the sparse decoder: to float rounding
    assert 0 < fast[0]["iou_sum"] < fast[0]["count"] and all(tiler._frames.values())
    with monkeypatch.context() as patch:  # SAM's own decoder: the sparse upscale's IoUs are the reference's exactly
        patch.setattr(grid_eval, "logits_options", lambda predictor: {})
        assert grid_eval.evaluate_image(sample, predictors, [4], match, points_per_batch=6, tiler=tiler) == reference


def test_sparse_masks_equal_sam_predictors_on_litemedsam():
    """LiteMedSAM's real decoder on real photos at an SA-1B-like size: realistic masks, tiled without the
    full masks, equal to SamPredictor's full-size masks pixel for pixel, and their IoUs."""
    import cv2
    from skimage import data

    from mobilesam_srw.eval.sam.tiles import MaskTiler
    from mobilesam_srw.eval.sam.tiles import paired_iou as tiled_iou
    from mobilesam_srw.sam.teachers.loading import load_teacher

    teacher = load_teacher("litemedsam")
    original = (600, 900)
    logits = []
    for photo in (data.astronaut(), cv2.GaussianBlur(data.astronaut(), (9, 9), 3)):
        resized = teacher.resize(cv2.resize(photo, original[::-1]))
        predictor = EmbeddingPredictor(teacher.sam)
        predictor.set_embedding(teacher.embed([resized])[0], original, resized.shape[:2])
        logits.append(next(predictor.point_logits(grid_points(4, original), batch_size=16))[0])
    tiler = MaskTiler(teacher.sam)
    tiled = [tiler(value, predictor.input_size, original, channels=3) for value in logits]
    dense = [teacher.sam.postprocess_masks(value, predictor.input_size, original).flatten(0, 1) > 0 for value in logits]
    assert tiler.frame((256, 256), predictor.input_size, original, torch.device("cpu")) is not None
    for ours, expected in zip(tiled, dense):
        assert torch.equal(ours.to_dense(original), expected)
    ious = tiled_iou(*tiled)
    assert torch.equal(ious, mask_iou(*dense))
    assert 0 < ious.mean() < 1 and 0.001 < dense[0].float().mean() < 0.9  # realistic: partial masks, partial overlap


def _decoder_differences(predictor: EmbeddingPredictor, points: np.ndarray, boxes: np.ndarray) -> list[float]:
    """Max |sparse decoder - SAM's MaskDecoder| / max |SAM's| of the logits and IoU predictions, for point
    prompts (3 masks and 1) and box prompts."""
    from mobilesam_srw.eval.sam.decoder import logits_options

    options = logits_options(predictor)
    assert set(options) == {"decoder"}
    calls = [lambda **extra: predictor.point_logits(points, batch_size=len(points), **extra),
             lambda **extra: predictor.point_logits(points, multimask_output=False, batch_size=len(points), **extra),
             lambda **extra: predictor.box_logits(boxes, batch_size=len(boxes), **extra)]
    differences = []
    for call in calls:
        for ours, expected in zip(next(call(**options)), next(call())):
            assert ours.shape == expected.shape
            differences.append(((ours - expected).abs().max() / expected.abs().max()).item())
    return differences


def test_sparse_decoder_equals_sams_mask_decoder(tiny_shards):
    """The sparse decoder's logits and IoU predictions are SAM's MaskDecoder's to float rounding (random weights)."""
    from mobilesam_srw.eval.sam.decoder import sparse_decoder

    _, predictors = _installed(tiny_shards, runs=2)
    predictor = predictors["student1"]
    points = grid_points(4, predictor.original_size)
    boxes = np.array([[10, 20, 120, 90], [0, 0, 50, 50], [30, 5, 200, 160]], dtype=np.float64)
    assert max(_decoder_differences(predictor, points, boxes)) <= 1e-5
    assert sparse_decoder(SimpleNamespace(mask_decoder=torch.nn.Identity())) is None  # not SAM's: no sparse decoder


def test_sparse_decoder_equals_sams_mask_decoder_on_litemedsam():
    """As above on LiteMedSAM's real weights and a real photo's embedding."""
    import cv2
    from skimage import data

    from mobilesam_srw.sam.teachers.loading import load_teacher

    teacher = load_teacher("litemedsam")
    original = (600, 900)
    resized = teacher.resize(cv2.resize(data.astronaut(), original[::-1]))
    predictor = EmbeddingPredictor(teacher.sam)
    predictor.set_embedding(teacher.embed([resized])[0], original, resized.shape[:2])
    boxes = np.array([[100, 50, 500, 550], [0, 0, 900, 600], [300, 200, 350, 260]], dtype=np.float64)
    assert max(_decoder_differences(predictor, grid_points(4, original), boxes)) <= 1e-5


def test_box_iou_matrix_equals_iou_matrix():
    from mobilesam_srw.eval.sam.everything import box_iou_matrix
    from mobilesam_srw.sam.masks import iou_matrix

    generator = torch.Generator().manual_seed(0)
    first = torch.zeros(6, 40, 50, dtype=torch.bool)
    second = torch.zeros(5, 40, 50, dtype=torch.bool)
    for masks in (first, second):
        for mask in masks[:-1]:  # the last stays empty
            y, x = torch.randint(0, 30, (2,), generator=generator).tolist()
            h, w = torch.randint(1, 20, (2,), generator=generator).tolist()
            mask[y : y + h, x : x + w] = torch.rand(h, w, generator=generator)[: 40 - y, : 50 - x] > 0.3
    assert torch.equal(box_iou_matrix(first, second), iou_matrix(first, second))
    assert box_iou_matrix(first[:0], second).shape == (0, 5)


def test_teacher_masks_are_made_once_for_every_student(tiny_shards, two_runs, tmp_path, monkeypatch):
    """Decoder calls per image: one per batch for the teacher and one per batch for each student, on both
    paths (recomputing the teacher's masks per student would make it 2 per batch and student)."""
    from segment_anything.modeling import MaskDecoder

    from mobilesam_srw.eval.sam.decoder import SparseDecoder

    calls = []
    forward = MaskDecoder.forward

    def counted(self, image_embeddings, *args, **kwargs):
        calls.append(image_embeddings.data_ptr())
        return forward(self, image_embeddings, *args, **kwargs)

    monkeypatch.setattr(MaskDecoder, "forward", counted)
    sparse_call = SparseDecoder.__call__

    def sparse_counted(self, image_embeddings, *args, **kwargs):
        calls.append(image_embeddings.data_ptr())
        return sparse_call(self, image_embeddings, *args, **kwargs)

    monkeypatch.setattr(SparseDecoder, "__call__", sparse_counted)
    for masks in ("sparse", "full"):
        calls.clear()
        evaluate(EvalConfig(shards=[str(tiny_shards)], students=two_runs, out=tmp_path / masks, grids=[4], limit=1,
                            points_per_batch=8, masks=masks, progress=False, device="cpu"))
        images, batches, models = 1, 2, 1 + len(two_runs)
        assert len(calls) == images * batches * models, masks
        assert len(set(calls[:models])) == models  # the teacher's embedding, then each student's


def test_progress_counts_prompts():
    from mobilesam_srw.eval.sam.progress import PromptBar

    with PromptBar(images=3, prompts_per_image=16, disable=True) as bar:
        bar.prompts_done(10)
        bar.image_done()  # 6 left of 16: counted as done
        assert (bar.prompts, bar.bar.total, bar.images_done) == (16, 48, 1)
    with PromptBar(images=4, prompts_per_image=None, world_size=2, disable=True) as bar:
        bar.prompts_done(5)
        bar.image_done()
        assert (bar.prompts, bar.bar.total, bar.images_done) == (10, 20, 2)  # estimated from the images done


def test_teacher_box_prompts_come_from_the_teachers_masks(tiny_shards, two_runs, tmp_path):
    """Boxes of the teacher's masks for a grid of boxes: inside the image, deterministic, no duplicates; a student
    whose embedding is the teacher's scores 100; the report."""
    from mobilesam_srw.eval.sam.boxes import cell_boxes, evaluate_image_teacher_boxes, teacher_boxes

    np.testing.assert_array_equal(cell_boxes(10, 20, 2), [[0, 0, 10, 5], [10, 0, 20, 5], [0, 5, 10, 10],
                                                          [10, 5, 20, 10]])
    sample, predictors = _teacher_twice(tiny_shards)
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
