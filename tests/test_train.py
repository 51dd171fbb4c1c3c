"""srw-sam train and export end to end: resume after a kill, gloo ranks, bad input, MobileSAM export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from mobilesam_srw import shards
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.export import student_sam
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam, save_tiny_teacher
from mobilesam_srw.sam.train import SamTrainConfig, train

from conftest import assert_one_line_error, free_port, run_cli

TRAIN_ARGS = ["--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "2", "--workers", "0",
              "--no-progress", "--device", "cpu"]


def parameters(run: Path) -> dict[str, torch.Tensor]:
    record = checkpoint.load(run / checkpoint.STUDENT_FILE)
    student = build_student(record["student"], record["img_size"])
    names = {name for name, _ in student.named_parameters()}
    return {k: v for k, v in record["model"].items() if k in names}


def train_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["split"] == "train"]


def test_train_writes_run_and_learns(tiny_shards, tmp_path, capsys):
    config = SamTrainConfig(shards=[str(tiny_shards)], out=tmp_path / "run", student="tinyvit-micro", batch_size=2,
                         epochs=3, workers=0, progress=False, device="cpu", val_shards=[str(tiny_shards)], lr=0.002)
    metrics = train(config)
    run = tmp_path / "run"
    assert (run / "student.pt").is_file() and (run / "config.json").is_file()
    recorded = json.loads((run / "config.json").read_text())
    assert {"tau", "epochs", "lr", "loss", "student", "val_shards"} <= recorded.keys()
    assert not recorded.keys() & set(SamTrainConfig.UNUSED_OPTIONS)  # srw_scope, momentum, milestones...: not SAM's
    printed = [line for line in capsys.readouterr().err.splitlines() if "held-out loss" in line]
    assert [line.split(":")[1].strip() for line in printed] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert f"held-out loss {metrics['val_loss']:.5g} (plain mse {metrics['val_mse']:.5g})" in printed[-1]
    assert "lowest so far" in printed[-1] and "checkpoints/epoch_00" in printed[-1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt", "last.pt"]
    assert any((run / "tensorboard").iterdir())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if line["split"] == "train"]
    assert len(train_lines) == 18 and [line["step"] for line in train_lines] == list(range(1, 19))
    assert {"loss", "lr", "samples_per_s", "srw_weight_max", "srw_tail_weight", "data_wait_fraction"} <= train_lines[0].keys()
    assert sum(line["split"] == "val" for line in lines) == 3
    assert np.mean([l["loss"] for l in train_lines[-6:]]) < np.mean([l["loss"] for l in train_lines[:6]])
    assert np.isfinite(metrics["val_loss"]) and np.isfinite(metrics["val_mse"])


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tiny_shards, tmp_path):
    args = ["train", "--shards", tiny_shards, *TRAIN_ARGS, "--save-every", "2", "--epochs", "3"]
    reference = run_cli(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "resumed"
    process = subprocess.Popen([sys.executable, "-m", "mobilesam_srw", *map(str, args), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / checkpoint.STUDENT_FILE).exists(), "training finished before it could be killed"
    assert checkpoint.load(last)["step"] < 18
    refused = run_cli(*args, "--out", out)
    assert_one_line_error(refused, "pass --resume")
    resumed = run_cli(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = parameters(tmp_path / "reference"), parameters(out)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0, msg=name)
    changed = run_cli(*args, "--out", out, "--resume", "--tau", "0.9")
    assert_one_line_error(changed, "started with tau=0.5")


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tiny_shards, tmp_path):
    common = ["--shards", str(tiny_shards), "--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "1",
              "--workers", "0", "--no-progress", "--device", "cpu"]
    single = run_cli("train", *common, "--grad-accum", "2", "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                            str(free_port()), "-m", "mobilesam_srw", "train", *common, "--out", str(tmp_path / "ranks")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    np.testing.assert_allclose(train_losses(tmp_path / "ranks"), train_losses(tmp_path / "single"), rtol=1e-5)
    assert len(train_losses(tmp_path / "single")) == 3  # 12 samples / global batch 4
    expected, got = parameters(tmp_path / "single"), parameters(tmp_path / "ranks")
    differences = np.array([(got[name] - value).abs().max().item() for name, value in expected.items()])
    # Adam divides by sqrt(v): a parameter whose gradient is ~0 turns summation-order noise (all-reduce
    # vs accumulation) into up to a fraction of one lr step. Nearly all tensors agree to float precision.
    assert np.median(differences) < 1e-6 and (differences < 1e-5).mean() > 0.9
    assert differences.max() < 1e-3  # half of one lr=2e-3 step


def write_shard(path: Path, embedding: np.ndarray, count: int = 4) -> None:
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(path), encoder=False) as writer:
        for index in range(count):
            image = rng.integers(0, 255, (256, 200, 3), dtype=np.uint8)
            avesim = np.zeros(embedding.shape[1:], np.float32)
            writer.write(shards.encode_sample(f"sa_{index}", shards.encode_image(image), embedding, avesim,
                                              {"original_size": [256, 200], "input_size": [256, 200]}, "fp32"))


@pytest.mark.slow
def test_bad_training_input(tmp_path, tiny_shards):
    from conftest import run_in_process

    out = tmp_path / "out"
    assert_one_line_error(run_in_process("train", "--shards", str(tmp_path / "none*.tar"), *TRAIN_ARGS, "--out", out),
                          "no shards match")
    assert_one_line_error(run_in_process("train", "--shards", tiny_shards, *TRAIN_ARGS, "--tau", "0", "--out", out),
                          "--tau must be")
    (tmp_path / "wide").mkdir()
    write_shard(tmp_path / "wide" / "shard-000000.tar", np.zeros((128, 16, 16), np.float32))
    assert_one_line_error(run_in_process("train", "--shards", tmp_path / "wide", *TRAIN_ARGS, "--out", out),
                          "shard embeddings are [128, 16, 16] but student tinyvit-micro outputs [256, 16, 16]")
    (tmp_path / "nan").mkdir()
    write_shard(tmp_path / "nan" / "shard-000000.tar", np.full((256, 16, 16), np.nan, np.float32))
    result = run_in_process("train", "--shards", tmp_path / "nan", *TRAIN_ARGS, "--out", out)
    assert_one_line_error(result, "loss is nan at step 1; samples: sa_")
    assert_one_line_error(run_in_process("train", "--shards", tiny_shards, *TRAIN_ARGS, "--batch-size", "64", "--out", out),
                          "fewer than one global batch of 64 (--batch-size x ranks x --grad-accum); pass a "
                          "--batch-size of at most 12")
    assert not (out / checkpoint.STUDENT_FILE).exists()


REFERENCE_MASKS = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from mobile_sam import SamPredictor, sam_model_registry
    folder = sys.argv[1]
    sam = sam_model_registry["vit_t"](checkpoint=folder + "/mobile_sam_srw.pt")  # strict load_state_dict
    sam.eval()  # MobileSAM caches attention biases in eval(): after loading, as its README does
    predictor = SamPredictor(sam)
    image = np.load(folder + "/image.npy")
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]),
                                              multimask_output=True)
    np.savez(folder + "/reference.npz", masks=masks, scores=scores, logits=logits)
    """
)


@pytest.mark.slow
def test_export_loads_in_mobilesam_with_the_same_masks(tmp_path, tiny_shards):
    from segment_anything import SamPredictor

    torch.manual_seed(0)
    teacher_file = tmp_path / "teacher_1024.pth"
    config = replace(SAM_CONFIGS["tiny"], image_size=1024)
    save_tiny_teacher(build_sam(config), config, teacher_file)
    student = build_student("tinyvit-5m", 1024).eval()
    run = tmp_path / "run"
    checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(student))
    result = run_cli("export", "--run", run, "--sam-checkpoint", teacher_file, "--out", tmp_path / "mobile_sam_srw.pt")
    assert result.returncode == 0, result.stderr
    image = (np.asarray(__import__("skimage.data").data.astronaut())[:300, :400]).copy()
    np.save(tmp_path / "image.npy", image)
    reference = subprocess.run([sys.executable, "-c", REFERENCE_MASKS, str(tmp_path)], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = np.load(tmp_path / "reference.npz")
    predictor = SamPredictor(student_sam(student, teacher_file))
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]),
                                              multimask_output=True)
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-3)
    np.testing.assert_allclose(scores, expected["scores"], atol=1e-4)
    assert (masks != expected["masks"]).mean() < 1e-4
    bad = run_cli("export", "--run", tmp_path / "nothing", "--sam-checkpoint", teacher_file, "--out", tmp_path / "x.pt")
    assert_one_line_error(bad, "no such run folder or student file")


# ---------------------------------------------------------------- LiteMedSAM shards: the teacher's frame downstream



class RecordingStudent(torch.nn.Module):
    """Records the input it is given; outputs zeros of the teacher's shape."""

    def forward(self, images):
        self.seen = images
        return torch.zeros(len(images), 256, 64, 64, requires_grad=True)


def test_sam_task_follows_the_teachers_preprocessing_and_patches(litemedsam_shards, tmp_path):
    from mobilesam_srw.sam.preprocessing import LiteMedSamPreprocessing
    from mobilesam_srw.sam.task import SamTask

    for student_size in (256, 512):
        task = SamTask(SamTrainConfig(shards=[str(litemedsam_shards)], out=tmp_path, student="tinyvit-micro",
                                   student_size=student_size if student_size != 256 else None, ignore_padding=True))
        assert task.input_size == 256 and task.stride == student_size // 64
        item = task.train_dataset()[0]
        batch = {key: value[None] for key, value in item.items() if key != "key"}
        height, width = item["size"].tolist()
        targets = task.targets(batch)
        assert targets.item_mask.sum().item() == -(-height // 4) * -(-width // 4)  # 4-px patches holding pixels
        student = RecordingStudent()
        task.losses(student, batch, targets, epoch=0)
        sample = shards.read_indexed(task.train_dataset().samples[0])
        expected = LiteMedSamPreprocessing(256)([sample.image])  # per-image min-max, zero padding
        if student_size == 256:
            torch.testing.assert_close(student.seen, expected)
        else:
            assert student.seen.shape == (1, 3, 512, 512)
            assert (torch.nn.functional.avg_pool2d(student.seen, 2) - expected).abs().mean() < 0.01  # the same, x2


@pytest.mark.slow
def test_litemedsam_pipeline(litemedsam_shards, tmp_path):
    """precompute -> train -> eval -> heatmap -> compare on LiteMedSAM shards, students of two input sizes."""
    from PIL import Image

    from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate
    from mobilesam_srw.viz.sam.heatmap import heatmap_figure

    common = ["--shards", litemedsam_shards, "--student", "tinyvit-micro", "--batch-size", "2", "--epochs", "1",
              "--workers", "0", "--no-progress", "--device", "cpu", "--output-init", "teacher-stats"]
    for name, extra in (("s4", ["--ignore-padding"]), ("s8", ["--student-size", "512", "--loss", "mse"])):
        result = run_cli("train", *common, *extra, "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    s4, record = checkpoint.load_student(tmp_path / "s4")
    s8, _ = checkpoint.load_student(tmp_path / "s8")
    assert (s4.img_size, s4.stride, s8.img_size, s8.stride) == (256, 4, 512, 8)
    assert record["teacher"]["type"] == "litemedsam"
    val, runs = [str(litemedsam_shards / "val")], [tmp_path / "s8", tmp_path / "s4"]
    box = evaluate(EvalConfig(shards=val, students=runs, out=tmp_path / "box", mode="gt", prompt="box",
                              progress=False, device="cpu"))
    assert box["teacher"]["type"] == "litemedsam" and box["masks"] > 0
    assert box["miou"]["teacher"] > 30  # a real teacher's boxes against the photo's segments
    assert set(box["miou_vs_teacher"]) == {"s8", "s4"} and all(0 <= v <= 100 for v in box["miou_vs_teacher"].values())
    assert "mIoU vs teacher" in (tmp_path / "box" / "table.md").read_text()
    grid = evaluate(EvalConfig(shards=val, students=runs, out=tmp_path / "grid", grids=[2], progress=False,
                               device="cpu"))
    assert all(0 <= grid["miou"][run]["2"] <= 100 for run in ("s8", "s4"))
    sample = next(shards.iterate_shards(shards.shard_paths(val)))
    figure = heatmap_figure(sample, 0.5)
    assert np.asarray(figure.axes[0].images[0].get_array()).shape == (256, 256, 3)  # the teacher's canvas
    assert np.asarray(figure.axes[1].images[0].get_array()).shape == (64, 64)
    result = run_cli("heatmap", "--shards", *val, "--first", "1", "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    result = run_cli("compare", "--shards", *val, "--runs", *runs, "--prompt", "box", "--first", "1",
                     "--device", "cpu", "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    for pattern in ("heatmap_*.png", "compare_*.png"):
        (png,) = (tmp_path / "figures").glob(pattern)
        with Image.open(png) as image:
            assert image.width > 1500
