"""The engine on a toy task: SRW scopes, exactness over ranks and accumulation, resume, logs, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.engine import Targets, fit
from mobilesam_srw.engine.checkpoint import load
from mobilesam_srw.engine.weighting import step_weights, tail_weight_fraction
from mobilesam_srw.errors import SrwError
from mobilesam_srw.srw import average_similarity, srw_weights

from conftest import free_port
from engine_toy import ToyConfig, ToyTask

TOY = Path(__file__).with_name("engine_toy.py")
CPU = DistributedContext()


def toy(tmp_path: Path, name: str, **overrides) -> ToyConfig:
    values = dict(out=tmp_path / name, batch_size=4, grad_accum=1, epochs=2, workers=0, progress=False, device="cpu",
                  optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="step", warmup=0, save_every=1000)
    values.update(overrides)
    return ToyConfig(**values)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load(run / "student.pt")["model"]


def metric_lines(run: Path, split: str = "train") -> list[dict]:
    return [line for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if line["split"] == split]


def test_batch_scope_weights_are_eq5_over_the_global_batch():
    features = torch.randn(16, 12)
    expected = srw_weights(average_similarity(features), 0.3)
    for micro in (1, 4, 16):
        targets = [Targets(features=part) for part in features.split(micro)]
        weights = step_weights(targets, "batch", 0.3, "softmax", CPU, global_batch=16)
        torch.testing.assert_close(torch.cat(weights.sample), expected, atol=1e-6, rtol=0)
        assert weights.stats.groups.item() == 1
    local = step_weights([Targets(features=p) for p in features.split(4)], "local", 0.3, "softmax", CPU, 16)
    for part, weights in zip(features.split(4), local.sample):  # local: each micro-batch its own group
        torch.testing.assert_close(weights * 4, srw_weights(average_similarity(part), 0.3))


def test_image_scope_weights_each_sample_by_its_own_items():
    avesim = torch.rand(3, 10)
    weights = step_weights([Targets(avesim=avesim)], "image", 0.5, "softmax", CPU, global_batch=3)
    torch.testing.assert_close(weights.item[0], torch.softmax(-avesim / 0.5, dim=-1))
    torch.testing.assert_close(weights.sample[0], torch.full((3,), 1 / 3))


def test_tail_weight_fraction():
    avesim = torch.tensor([[0.1, 0.9, 0.5, 0.2, 0.3, 0.8, 0.7, 0.6]])
    uniform = torch.full((1, 8), 1 / 8)
    assert tail_weight_fraction(uniform, avesim).item() == pytest.approx(0.25)
    srw = srw_weights(avesim, 0.1)
    assert tail_weight_fraction(srw, avesim).item() == pytest.approx((srw[0, 0] + srw[0, 3]).item())
    assert tail_weight_fraction(srw, avesim).item() > 0.25
    mask = torch.tensor([[False, True, True, True, True, True, True, True]])  # quarter of 7 valid items: 1
    assert tail_weight_fraction(srw, avesim, mask).item() == pytest.approx(srw[0, 3].item())


@pytest.mark.parametrize("scope", ["batch", "image"])
def test_accumulation_gives_the_same_steps_as_one_batch(tmp_path, scope):
    whole = fit(ToyTask(toy(tmp_path, "whole", batch_size=16, scope=scope, tau=0.2)))
    accumulated = fit(ToyTask(toy(tmp_path, "accum", batch_size=4, grad_accum=4, scope=scope, tau=0.2)))
    for name, value in final_weights(tmp_path / "whole").items():
        torch.testing.assert_close(final_weights(tmp_path / "accum")[name], value, atol=1e-6, rtol=0)
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    lines = metric_lines(tmp_path / "accum")
    assert [line["step"] for line in lines] == list(range(1, 7))  # 48 samples / 16, 2 epochs
    assert {"loss", "distill", "l2", "lr", "samples_per_s", "srw_weight_max", "srw_tail_weight",
            "data_wait_fraction"} <= lines[0].keys()
    assert all(line["srw_tail_weight"] > 0.25 for line in lines)  # SRW leans on the tail
    assert lines[0]["loss"] == pytest.approx(lines[0]["distill"] + lines[0]["l2"], rel=1e-6)


def test_plain_mean_without_srw(tmp_path):
    fit(ToyTask(toy(tmp_path, "plain", srw=False, epochs=1)))
    lines = metric_lines(tmp_path / "plain")
    assert all(line["srw_tail_weight"] == pytest.approx(0.25) for line in lines)
    assert all(line["srw_weight_max"] == pytest.approx(1 / 4) for line in lines)


def run_ranks(tmp_path: Path, config: dict, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TOY.parent)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(port), str(TOY), json.dumps(config)], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["batch", "image"])
def test_two_gloo_ranks_match_one_process(tmp_path, scope):
    base = dict(workers=0, progress=False, device="cpu", optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                schedule="step", warmup=0, epochs=2, tau=0.2, scope=scope)
    fit(ToyTask(ToyConfig(out=tmp_path / "single", batch_size=4, grad_accum=4, **base)))
    result = run_ranks(tmp_path, {**base, "out": str(tmp_path / "ranks"), "batch_size": 4, "grad_accum": 2},
                       free_port())
    assert result.returncode == 0, result.stderr[-3000:]
    for name, value in final_weights(tmp_path / "single").items():
        torch.testing.assert_close(final_weights(tmp_path / "ranks")[name], value, atol=1e-6, rtol=0)
    single, ranks = metric_lines(tmp_path / "single"), metric_lines(tmp_path / "ranks")
    for key in ("loss", "distill", "l2", "srw_weight_max", "srw_tail_weight"):
        np.testing.assert_allclose([l[key] for l in ranks], [l[key] for l in single], rtol=1e-5, err_msg=key)


def test_resume_continues_exactly_and_cuts_the_log_back(tmp_path):
    reference = toy(tmp_path, "reference", epochs=3, save_every=2, optimizer="adamw", lr=0.01)
    fit(ToyTask(reference))
    stopped = toy(tmp_path, "resumed", epochs=3, save_every=2, optimizer="adamw", lr=0.01, max_steps=4)
    fit(ToyTask(stopped))
    run = tmp_path / "resumed"
    # as if killed after logging step 5, writing its checkpoint: the last complete checkpoint is step 4's
    (run / "student.pt").unlink()
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "split": "train", "loss": 1.0}\n{"step": 6, "spl')
    (run / "checkpoints" / ".last.pt.tmp123").write_bytes(b"half a checkpoint")
    with pytest.raises(SrwError, match="pass --resume"):
        fit(ToyTask(toy(tmp_path, "resumed", epochs=3, optimizer="adamw", lr=0.01)))
    with pytest.raises(SrwError, match="started with lr=0.01"):
        fit(ToyTask(toy(tmp_path, "resumed", epochs=3, optimizer="adamw", lr=0.02, resume=True)))
    fit(ToyTask(toy(tmp_path, "resumed", epochs=3, save_every=2, optimizer="adamw", lr=0.01, resume=True)))
    assert not (run / "checkpoints" / ".last.pt.tmp123").exists()
    steps = [line["step"] for line in metric_lines(run)]
    assert steps == list(range(1, 37))  # 3 epochs of 12 steps; no duplicate of step 5
    for name, value in final_weights(tmp_path / "reference").items():
        torch.testing.assert_close(final_weights(run)[name], value, atol=1e-6, rtol=0)


def test_a_fresh_run_never_appends_to_an_old_log(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 77, "split": "train", "loss": 1.0}\n')
    fit(ToyTask(toy(tmp_path, "fresh", epochs=1)))
    assert [line["step"] for line in metric_lines(run)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def test_validation_reports_objective_plain_loss_and_metrics(tmp_path):
    class WithValidation(ToyTask):
        def val_dataset(self):
            return self.train_dataset()

    metrics = fit(WithValidation(toy(tmp_path, "val", epochs=1)))
    assert {"val_loss", "val_distill", "val_l2", "val_close"} <= metrics.keys()
    assert 0 <= metrics["val_close"] <= 1


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("nan"), "--lr must be a finite number"),
    ("warmup", float("nan"), "--warmup must be a finite number"),
    ("weight_decay", -5.0, "--weight-decay must be >= 0"),
    ("workers", -1, "--workers must be >= 0"),
    ("max_steps", 0, "--max-steps must be >= 1"),
    ("tau", 0.0, "--tau must be >= 0.0001"),
    ("optimizer", "adam", "--optimizer must be one of adamw, sgd"),
    ("device", "bogus", "--device must be"),
])
def test_bad_values_are_refused_before_any_folder(tmp_path, field, value, message):
    with pytest.raises(SrwError, match=message.replace("(", r"\(")):
        fit(ToyTask(toy(tmp_path, "bad", **{field: value})))
    assert not (tmp_path / "bad").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SrwError, match="exists and is not a folder"):
        fit(ToyTask(toy(tmp_path, "file")))


def test_nan_loss_names_step_and_samples(tmp_path):
    class Broken(ToyTask):
        def losses(self, model, batch, targets, epoch):
            losses = super().losses(model, batch, targets, epoch)
            losses.distill = losses.distill * float("nan")
            return losses

    with pytest.raises(SrwError, match=r"loss is nan at step 1; samples: toy_\d+, toy_\d+, toy_\d+, toy_\d+$"):
        fit(Broken(toy(tmp_path, "nan")))
    with pytest.raises(SrwError, match=r"samples: (toy_\d+, ){7}toy_\d+ \(\+8 more\)$"):  # a long batch: 8 named
        fit(Broken(toy(tmp_path, "nan16", batch_size=16)))


def test_one_writer_per_run_folder(tmp_path):
    from mobilesam_srw.lock import output_lock

    with output_lock(tmp_path / "busy"):
        with pytest.raises(SrwError, match=r"in use by another srw job \(pid \d+\)"):
            fit(ToyTask(toy(tmp_path, "busy")))
        with pytest.raises(SrwError, match="in use"):
            with output_lock(tmp_path / "busy"):
                pass
    assert not (tmp_path / "busy" / "student.pt").exists()
    fit(ToyTask(toy(tmp_path, "busy", epochs=1)))  # released: the run goes ahead
    assert (tmp_path / "busy" / "student.pt").is_file()
