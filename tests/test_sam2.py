"""SAM 2.1 teachers (docs/sam2.md) against the ``sam2`` package itself, on the same random weights.

Stored targets are ``SAM2ImagePredictor``'s ``_features`` of the stored image; masks from stored features are
``SAM2ImagePredictor.predict``'s; the exported model's predictor gives the student's maps. The teacher is
``sam2.1_tiny`` (Hiera-T's config with a cut-down trunk, so a 1024 px image takes seconds on a CPU). Tests that
need ``sam2`` are skipped without the ``[sam2]`` extra; the one-line message for that case is tested either way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sam.run_identity import target_maps_record
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.sam2_loss import Sam2LossOptions, sam2_terms

from conftest import run_in_process

HAS_SAM2 = importlib.util.find_spec("sam2") is not None
needs_sam2 = pytest.mark.skipif(not HAS_SAM2, reason='the [sam2] extra is not installed (pip install ".[sam2]")')
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "sam2.md"
MAPS = ("high_res_0", "high_res_1")


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from mobilesam_srw.sam.teachers.sam2 import write_random_checkpoint

    if not HAS_SAM2:
        pytest.skip("the [sam2] extra is not installed")
    return write_random_checkpoint(tmp_path_factory.mktemp("sam2") / "sam2.1_tiny.pt", "sam2.1_tiny", seed=0)


@pytest.fixture(scope="module")
def sam2_shards(tiny_checkpoint, tmp_path_factory) -> Path:
    """fp32 shards of two sample photos (SA-1B layout, with annotations) from the random sam2.1_tiny."""
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b

    folder = tmp_path_factory.mktemp("sam2_sa1b")
    write_sample_sa1b(folder, num_images=2, images_per_tar=2, seed=0, max_side=96)
    out = tmp_path_factory.mktemp("sam2_shards")
    run_precompute(PrecomputeConfig(inputs=[str(folder)], out=out, teacher="sam2.1_tiny", checkpoint=tiny_checkpoint,
                                    subset="all", shard_size=4, batch_size=2, workers=0, progress=False, dtype="fp32"))
    return out


@pytest.fixture(scope="module")
def teacher(tiny_checkpoint):
    from mobilesam_srw.sam.teachers import load_teacher

    return load_teacher("sam2.1_tiny", tiny_checkpoint)


@pytest.fixture(scope="module")
def stored(sam2_shards) -> list:
    return list(shards.iterate_shards(shards.shard_paths([sam2_shards]), maps=MAPS))


def sam2_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from mobilesam_srw.sam.teachers.sam2 import scripting_quietly

    with scripting_quietly():
        return SAM2ImagePredictor(model)


# ---------------------------------------------------------------- targets and preprocessing


@needs_sam2
def test_stored_targets_are_the_predictors_features(teacher, stored):
    predictor = sam2_predictor(teacher.sam)
    for sample in stored:
        predictor.set_image(sample.image)
        features = predictor._features
        torch.testing.assert_close(torch.from_numpy(sample.embedding)[None], features["image_embed"], atol=1e-5, rtol=0)
        for name, expected in zip(MAPS, features["high_res_feats"]):
            torch.testing.assert_close(torch.from_numpy(sample.maps[name])[None], expected, atol=1e-5, rtol=0)


@needs_sam2
@pytest.mark.slow
def test_the_real_hiera_t_config_stores_the_predictors_features(tmp_path):
    """sam2.1_hiera_t (the smallest released config, random weights) through the CLI: a subprocess, so slow."""
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
    from mobilesam_srw.sam.teachers import load_teacher
    from mobilesam_srw.sam.teachers.sam2 import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt", "sam2.1_hiera_t", seed=1)
    write_sample_sa1b(tmp_path / "in", num_images=1, images_per_tar=1, seed=0, max_side=64)
    result = subprocess.run([sys.executable, "-m", "mobilesam_srw", "precompute", "--sa1b", str(tmp_path / "in"),
                             "--subset", "all", "--teacher", "sam2.1_hiera_t", "--checkpoint", str(checkpoint),
                             "--dtype", "fp32", "--out", str(tmp_path / "shards"), "--no-progress"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    sample = next(shards.iterate_shards(shards.shard_paths([tmp_path / "shards"]), maps=MAPS))
    predictor = sam2_predictor(load_teacher("sam2.1_hiera_t", checkpoint).sam)
    predictor.set_image(sample.image)
    torch.testing.assert_close(torch.from_numpy(sample.embedding)[None], predictor._features["image_embed"],
                               atol=1e-5, rtol=0)
    for name, expected in zip(MAPS, predictor._features["high_res_feats"]):
        torch.testing.assert_close(torch.from_numpy(sample.maps[name])[None], expected, atol=1e-5, rtol=0)


@needs_sam2
def test_the_manifest_names_the_maps_their_dtype_and_size(sam2_shards, stored):
    manifest = shards.read_manifest(sam2_shards)
    assert manifest["teacher"]["type"] == "sam2.1_tiny" and manifest["teacher"]["preprocessing"] == "sam2"
    maps = manifest["target_maps"]
    assert {name: entry["shape"] for name, entry in maps.items()} == {
        "embedding": [256, 64, 64], "high_res_0": [32, 256, 256], "high_res_1": [64, 128, 128]}
    assert {entry["dtype"] for entry in maps.values()} == {"fp32"}
    assert manifest["target_bytes_per_sample"] == 16 * 2**20
    assert [list(sample.maps[name].shape) for name in MAPS for sample in stored[:1]] == [[32, 256, 256], [64, 128, 128]]


def test_bytes_per_sample_of_each_dtype():
    identity = {"embedding_shape": [256, 64, 64], "target_maps": {"high_res_0": [32, 256, 256],
                                                                  "high_res_1": [64, 128, 128]}}
    assert target_maps_record(identity, "fp16")["target_bytes_per_sample"] == 8 * 2**20
    assert target_maps_record(identity, "int8")["target_bytes_per_sample"] == 4 * 2**20 + 4 * (64**2 + 256**2 + 128**2)
    assert target_maps_record({"embedding_shape": [256, 64, 64]}, "fp16") == {}  # SAM's records stay as they were


@needs_sam2
def test_int8_maps_round_trip_within_their_scale():
    rng = np.random.default_rng(0)
    embedding, high_res = rng.normal(size=(4, 2, 2)).astype(np.float32), rng.normal(size=(3, 8, 8)).astype(np.float32)
    fields = shards.encode_sample("k", b"", embedding, np.zeros((2, 2), np.float32), {}, "int8",
                                 maps={"high_res_0": high_res})
    decoded = shards.decode_embedding(fields, names=shards.map_fields("high_res_0"))
    assert np.abs(decoded - high_res).max() <= np.abs(high_res).max(axis=0).max() / 127


@needs_sam2
def test_preprocessing_is_sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    from mobilesam_srw.sam.teachers.sam2 import Sam2Preprocessing, scripting_quietly
    from mobilesam_srw.sam.transforms import pad_image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1024, 700, 3), dtype=np.uint8), rng.integers(0, 256, (300, 1024, 3), dtype=np.uint8)]
    padded = torch.stack([pad_image(image, 1024) for image in images])
    sizes = torch.tensor([image.shape[:2] for image in images])
    with scripting_quietly():
        expected = torch.stack([SAM2Transforms(1024, 0.0)(image) for image in images])
    torch.testing.assert_close(Sam2Preprocessing(1024).normalize_padded(padded, sizes), expected, atol=0, rtol=0)


# ---------------------------------------------------------------- masks through SAM 2's decoder


@pytest.fixture(scope="module")
def decoder(sam2_shards, tiny_checkpoint):
    from mobilesam_srw.sam.teachers.shards import shard_teacher

    return shard_teacher(shards.shard_paths([sam2_shards])).decoder(tiny_checkpoint)


def installed(decoder, sample, size: tuple[int, int] | None = None):
    """A feature predictor with the sample's stored maps, for its original size (or ``size``: the stored
    image's, to compare with ``SAM2ImagePredictor.set_image`` of the stored image)."""
    from mobilesam_srw.sam.sam2_predictor import Sam2FeaturePredictor

    predictor = Sam2FeaturePredictor(decoder)
    predictor.set_features(torch.from_numpy(sample.embedding), [torch.from_numpy(sample.maps[n]) for n in MAPS],
                           size or sample.meta["original_size"])
    return predictor


@needs_sam2
def test_masks_from_stored_features_are_the_predictors(teacher, decoder, stored):
    reference = sam2_predictor(teacher.sam)
    for sample in stored[:1]:  # the decoder at 1024 px costs seconds per prompt on a CPU
        reference.set_image(sample.image)
        mine = installed(decoder, sample, sample.image.shape[:2])
        height, width = sample.image.shape[:2]
        points = np.array([[width * 0.3, height * 0.6], [width * 0.8, height * 0.2]])
        for point in points:
            expected = reference.predict(point_coords=point[None], point_labels=np.array([1]))
            got = mine.predict(point_coords=point[None], point_labels=np.array([1]))
            assert (expected[0] == got[0]).all()
            np.testing.assert_allclose(got[1], expected[1], atol=1e-5)
        box = np.array([width * 0.1, height * 0.2, width * 0.7, height * 0.9])
        assert (reference.predict(box=box, multimask_output=False)[0] == mine.predict(box=box, multimask_output=False)[0]).all()
        # The evaluation's batched prompts (the decoder's repeat_image path, other float sums) give the same masks
        # up to pixels at the threshold.
        masks, _ = next(mine.point_batches(points))
        for mask, point in zip(masks.cpu().numpy(), points):
            single = reference.predict(point_coords=point[None], point_labels=np.array([1]))[0]
            assert (mask != single).mean() < 1e-4
        boxes, _ = next(mine.box_batches(box[None]))
        assert (boxes[0].cpu().numpy() == reference.predict(box=box, multimask_output=False)[0]).all()


@needs_sam2
def test_grid_evaluation_of_the_teachers_own_features_is_100(decoder, stored):
    from mobilesam_srw.eval.sam.grid import evaluate_image

    sample = stored[0]
    rows = evaluate_image(sample, {"teacher": installed(decoder, sample), "copy": installed(decoder, sample)}, [2],
                          "all")
    assert rows[0]["count"] == 2 * 2 * 3 and rows[0]["iou_sum"] == pytest.approx(rows[0]["count"])
    assert sum(rows[0][f"q{q}_count"] for q in range(1, 5)) == rows[0]["count"]


@needs_sam2
def test_everything_mode_runs_sam2s_generator_on_the_installed_features(decoder, stored):
    from mobilesam_srw.eval.sam.everything import evaluate_image_everything

    sample = stored[0]
    rows = evaluate_image_everything(sample, {"teacher": installed(decoder, sample), "copy": installed(decoder, sample)},
                                     2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert rows[0]["teacher_masks"] == rows[0]["student_masks"] > 0
    assert rows[0]["matched"] == rows[0]["teacher_masks"]
    assert rows[0]["matched_iou_sum"] == pytest.approx(rows[0]["matched"])


# ---------------------------------------------------------------- students, objective, export


def test_high_resolution_terms():
    torch.manual_seed(0)
    shapes = {"embedding": (2, 256, 4, 4), "high_res_0": (2, 32, 16, 16), "high_res_1": (2, 64, 8, 8)}
    targets = {name: torch.randn(shape) for name, shape in shapes.items()}
    predicted = tuple(torch.randn(shape) for shape in shapes.values())
    squared = [(p - t).square().mean(dim=1) for p, t in zip(predicted, targets.values())]  # per pixel
    pooled = [squared[1].unflatten(1, (4, 4)).unflatten(3, (4, 4)).mean(dim=(2, 4)),
              squared[2].unflatten(1, (4, 2)).unflatten(3, (4, 2)).mean(dim=(2, 4))]
    distill, extra, metrics = sam2_terms(predicted, targets, Sam2LossOptions(high_res_0_weight=0.5, high_res_1_weight=2))
    torch.testing.assert_close(distill, (squared[0] + 0.5 * pooled[0] + 2 * pooled[1]).flatten(1))
    assert extra == {}
    distill, extra, metrics = sam2_terms(predicted, targets, Sam2LossOptions(high_res_loss="mse", high_res_1_weight=3))
    torch.testing.assert_close(distill, squared[0].flatten(1))
    torch.testing.assert_close(extra["high_res_0"], squared[1].flatten(1).mean(1))
    torch.testing.assert_close(extra["high_res_1"], 3 * squared[2].flatten(1).mean(1))
    torch.testing.assert_close(metrics["mse_high_res_1"], squared[2].flatten(1).mean(1))


def test_a_tinyvit_student_starts_from_mobilesam_or_a_sam2_run(tmp_path):
    from mobilesam_srw.engine import checkpoint as checkpoint_io
    from mobilesam_srw.sam import checkpoint
    from mobilesam_srw.sam.mobilesam_format import to_mobilesam
    from mobilesam_srw.sam.sam2_student import build_sam2_student
    from mobilesam_srw.sam.sam2_task import init_student
    from mobilesam_srw.sam.student import build_student

    torch.manual_seed(0)
    mobilesam = build_student("tinyvit-micro")
    checkpoint_io.save(tmp_path / "mobile_sam.pt", to_mobilesam(mobilesam))
    student = build_sam2_student("tinyvit-micro")
    lateral = student.lateral_0.weight.clone()
    init_student(student, tmp_path / "mobile_sam.pt")
    torch.testing.assert_close(student.backbone.trunk.state_dict(), mobilesam.backbone.state_dict())
    torch.testing.assert_close(student.neck.state_dict(), mobilesam.neck.state_dict())
    assert torch.equal(student.lateral_0.weight, lateral)
    checkpoint.save(tmp_path / "run" / checkpoint.STUDENT_FILE,
                    {**checkpoint.student_record(student), "family": "sam2"})
    again = build_sam2_student("tinyvit-micro")
    init_student(again, tmp_path / "run")
    torch.testing.assert_close(again.state_dict(), student.state_dict())
    checkpoint.save(tmp_path / "sam_run" / checkpoint.STUDENT_FILE, checkpoint.student_record(mobilesam))
    with pytest.raises(SrwError) as error:
        init_student(again, tmp_path / "sam_run")
    assert "a student of a SAM-family teacher" in one_line(error)


@pytest.fixture(scope="module")
def student_run(sam2_shards, tmp_path_factory) -> Path:
    """A random SAM 2 student (timm's test_resnet) saved as a run of the shards' teacher."""
    from mobilesam_srw.sam import checkpoint
    from mobilesam_srw.sam.sam2_student import build_sam2_student

    torch.manual_seed(0)
    student = build_sam2_student("timm:test_resnet")
    run = tmp_path_factory.mktemp("sam2_run")
    teacher = shards.read_manifest(sam2_shards)["teacher"]
    checkpoint.save(run / checkpoint.STUDENT_FILE,
                    {**checkpoint.student_record(student, teacher=teacher, loss="srw"), "family": "sam2"})
    return run


@needs_sam2
def test_the_exported_model_is_sam2s_predictor_on_the_student(student_run, tiny_checkpoint, decoder, stored, tmp_path):
    from mobilesam_srw.sam.checkpoint import load_student
    from mobilesam_srw.sam.sam2_export import export_sam2, export_sam2_onnx, student_predictor
    from mobilesam_srw.sam.sam2_predictor import student_features
    from mobilesam_srw.sam.teachers.sam2 import Sam2Preprocessing

    student, _ = load_student(student_run)
    assert [tuple(o.shape) for o in student(torch.zeros(1, 3, 1024, 1024))] == [
        (1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
    predictor = student_predictor(export_sam2(student_run, tiny_checkpoint, tmp_path / "student_sam2.pt"))
    sample = stored[0]
    predictor.set_image(sample.image)
    expected = student_features(student, sample, torch.device("cpu"), Sam2Preprocessing(1024))
    got = [predictor._features["image_embed"], *predictor._features["high_res_feats"]]
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    mine = installed(decoder, sample)
    mine.set_features(expected[0], expected[1:], sample.image.shape[:2])
    point = np.array([[40.0, 50.0]])
    assert (predictor.predict(point_coords=point, point_labels=np.array([1]))[0]
            == mine.predict(point_coords=point, point_labels=np.array([1]))[0]).all()

    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_sam2_onnx(student_run, tmp_path / "onnx")
    images = Sam2Preprocessing(1024).normalize_padded(torch.from_numpy(sample.image).permute(2, 0, 1)[None],
                                                      torch.tensor([sample.image.shape[:2]]))
    outputs = onnxruntime.InferenceSession(str(path)).run(None, {"images": images.numpy()})
    for output, reference in zip(outputs, expected):
        np.testing.assert_allclose(output, reference.numpy(), atol=1e-4)


# ---------------------------------------------------------------- one-line errors


@needs_sam2
def test_a_bad_or_mismatched_checkpoint_is_one_line(tiny_checkpoint, tmp_path):
    from mobilesam_srw.engine import checkpoint as checkpoint_io
    from mobilesam_srw.sam.teachers import load_teacher

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SrwError) as error:
        load_teacher("sam2.1_tiny", garbage)
    assert "cannot read checkpoint" in one_line(error)
    with pytest.raises(SrwError) as error:
        load_teacher("sam2.1_hiera_t", tiny_checkpoint)
    assert "does not fit teacher sam2.1_hiera_t: it looks like sam2.1_tiny" in one_line(error)
    state = checkpoint_io.load(tiny_checkpoint)["model"]
    older = tmp_path / "sam2_0.pt"
    checkpoint_io.save(older, {"model": {k: v for k, v in state.items() if k != "no_obj_embed_spatial"}})
    with pytest.raises(SrwError) as error:
        load_teacher("sam2.1_tiny", older)
    assert "SAM 2 (not 2.1)" in one_line(error)
    broken = tmp_path / "broken.pt"
    checkpoint_io.save(broken, {"model": {**state, "sam_mask_decoder.conv_s0.weight": torch.zeros(1)}})
    with pytest.raises(SrwError) as error:
        load_teacher("sam2.1_tiny", broken)
    assert "does not fit" in one_line(error)
    not_weights = tmp_path / "not_weights.pt"
    checkpoint_io.save(not_weights, {"model": {"step": 3}})
    with pytest.raises(SrwError) as error:
        load_teacher("sam2.1_tiny", not_weights)
    assert "no state dict of tensors" in one_line(error)


@needs_sam2
def test_the_cli_refuses_a_mismatched_checkpoint_before_any_folder(tiny_checkpoint, tmp_path):
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b

    write_sample_sa1b(tmp_path / "in", num_images=1, images_per_tar=1, seed=0, max_side=64)
    result = run_in_process("precompute", "--sa1b", tmp_path / "in", "--subset", "all", "--teacher", "sam2.1_hiera_s",
                            "--checkpoint", tiny_checkpoint, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "looks like sam2.1_tiny" in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_sam2_a_sam2_teacher_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("sam2", "sam2.build_sam", "sam2.sam2_image_predictor"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of them fails, as when not installed
    (tmp_path / "in").mkdir()
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"x")
    result = run_in_process("precompute", "--images", tmp_path / "in", "--teacher", "sam2.1_hiera_t", "--checkpoint",
                            checkpoint, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and 'pip install "mobilesam-srw[sam2]"' in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_sam2_teacher_needs_its_checkpoint(tmp_path):
    if not HAS_SAM2:
        pytest.skip("the [sam2] extra is not installed")
    (tmp_path / "in").mkdir()
    result = run_in_process("precompute", "--images", tmp_path / "in", "--teacher", "sam2.1_hiera_t", "--out",
                            tmp_path / "out")
    assert result.returncode == 2 and "--checkpoint is required for teacher sam2.1_hiera_t" in result.stderr


# ---------------------------------------------------------------- the guide, as written


@needs_sam2
@pytest.mark.slow
def test_the_guide_runs_as_written(tmp_path):
    """docs/sam2.md's sample run: precompute -> train -> eval -> heatmap -> compare -> export -> predictor."""
    text = GUIDE.read_text()
    section = text[text.index("## Try it on sample photos"):]
    commands = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip().splitlines()
    python_block = re.search(r"```py\n(.*?)```", section, flags=re.S).group(1)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["teacher"]["type"] == "sam2.1_tiny" and summary["miou"]["srw"]["2"] is not None
    assert json.loads((tmp_path / "eval_box" / "summary.json").read_text())["masks"] > 0
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir() if p.suffix in (".pdf", ".png"))
    assert [name.split("_")[0] for name in figures] == ["compare", "compare", "heatmap", "heatmap"]
    assert (tmp_path / "student_sam2.pt").is_file() and (tmp_path / "onnx" / "encoder.onnx").is_file()
    result = subprocess.run([sys.executable, "-c", python_block], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(3, 512, 512)" in result.stdout
