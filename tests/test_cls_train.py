"""srw-cls on the engine: every method with and without SRW, teacher training, resume, 2 gloo ranks,
DKD's warmup, FitNet's connector, eval bands, tables, sweeps and bad input (on scikit-learn's digits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilesam_srw.cls.checkpoint import load_classifier
from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.methods import METHODS, MethodSettings, method_settings
from mobilesam_srw.cls.methods.dkd import DKD
from mobilesam_srw.cls.methods.fitnet import ConvReg
from mobilesam_srw.cls.models import create
from mobilesam_srw.cls.sweep import Sweep, write_sweep
from mobilesam_srw.cls.train import train
from mobilesam_srw.engine.checkpoint import load
from mobilesam_srw.eval.cls.tables import comparison_tables, read_run

from conftest import assert_one_line_error, free_port, run_cli

COMMON = dict(dataset="digits", workers=0, progress=False, device="cpu", epochs=1)
TEACHER, STUDENT = "cnn_digits_teacher", "cnn_digits_student"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cls") / "teacher"
    metrics = train(ClsTrainConfig(out=run, student=TEACHER, **{**COMMON, "epochs": 3}))
    assert metrics["val_top1"] > 0.5  # real digits: a few epochs already learn them
    assert metrics["val_best_top1"] >= metrics["val_top1"] and 1 <= metrics["val_best_epoch"] <= 3
    return run / "student.pt"


def student_config(tmp_path: Path, name: str, teacher_file: Path, **overrides) -> ClsTrainConfig:
    values = dict(out=tmp_path / name, student=STUDENT, teacher=TEACHER, teacher_checkpoint=teacher_file,
                  method="kd", **COMMON)
    values.update(overrides)
    return ClsTrainConfig(**values)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_with_and_without_srw(tmp_path, teacher_file, method):
    plain = train(student_config(tmp_path, f"{method}", teacher_file, method=method))
    srw = train(student_config(tmp_path, f"{method}_srw", teacher_file, method=method, srw=True, tau=0.1))
    assert plain["srw_tail_weight"] == pytest.approx(0.25) and srw["srw_tail_weight"] > 0.25
    for metrics in (plain, srw):
        assert metrics["loss"] == pytest.approx(metrics["distill"] + metrics["ce"], rel=1e-4)
        assert 0 <= metrics["val_top1"] <= metrics["val_top5"] <= 1
    model, record = load_classifier(tmp_path / f"{method}_srw")
    assert record["method"] == method and record["srw"] and isinstance(model, torch.nn.Module)


def test_recipes_fill_unset_options():
    cifar = ClsTrainConfig(out=Path("x"), dataset="cifar100", data=Path("d"), student="ShuffleV1")
    assert (cifar.lr, cifar.batch_size, cifar.epochs, cifar.weight_decay, cifar.milestones) == (
        0.01, 64, 240, 5e-4, [150, 180, 210])
    assert ClsTrainConfig(out=Path("x"), dataset="cifar100", data=Path("d"), student="resnet8x4").lr == 0.05
    imagenet = ClsTrainConfig(out=Path("x"), dataset="imagenet", data=Path("d"), student="ResNet18", lr=0.1)
    assert (imagenet.lr, imagenet.batch_size, imagenet.epochs, imagenet.milestones) == (0.1, 512, 100, [30, 60, 90])
    assert method_settings("dkd", "cifar", "resnet56", "resnet20").beta == 2.0
    assert method_settings("dkd", "cifar", "resnet32x4", "resnet8x4").beta == 8.0
    assert method_settings("dkd", "imagenet", "ResNet34", "ResNet18").beta == 0.5
    kd = method_settings("kd", "cifar", "a", "b")
    assert (kd.ce_weight, kd.distill_weight, kd.temperature) == (0.1, 0.9, 4.0)


def test_dkd_warmup_is_mdistillers_linear_ramp():
    method = DKD(torch.nn.Identity(), MethodSettings(warmup_epochs=20))
    assert [method.warmup_factor(epoch) for epoch in (0, 9, 19, 50)] == [1 / 20, 10 / 20, 1.0, 1.0]
    assert DKD(torch.nn.Identity(), MethodSettings()).warmup_factor(0) == 1.0


@pytest.mark.parametrize("student_shape, teacher_shape", [((16, 8, 8), (64, 4, 4)), ((16, 4, 4), (64, 8, 8)),
                                                          ((16, 8, 8), (64, 8, 8)), ((16, 6, 6), (32, 4, 4))])
def test_fitnet_connector_fits_the_teachers_hint(student_shape, teacher_shape):
    out = ConvReg(student_shape, teacher_shape)(torch.randn(2, *student_shape))
    assert out.shape == (2, *teacher_shape)


def test_resume_equals_an_uninterrupted_run(tmp_path, teacher_file):
    train(student_config(tmp_path, "whole", teacher_file, epochs=2, srw=True, augment=False))
    train(student_config(tmp_path, "parts", teacher_file, epochs=2, srw=True, augment=False, max_steps=25))
    (tmp_path / "parts" / "student.pt").unlink()
    train(student_config(tmp_path, "parts", teacher_file, epochs=2, srw=True, augment=False, resume=True))
    expected, got = load(tmp_path / "whole" / "student.pt")["model"], load(tmp_path / "parts" / "student.pt")["model"]
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, teacher_file):
    common = ["--dataset", "digits", "--student", STUDENT, "--teacher", TEACHER, "--teacher-checkpoint",
              str(teacher_file), "--method", "dkd", "--srw", "--epochs", "1", "--workers", "0", "--no-augment",
              "--no-progress", "--device", "cpu", "--max-steps", "6"]
    # the same micro-batches of 16 (BatchNorm statistics are per micro-batch): 1 process x 4 == 2 ranks x 2
    single = run_cli("train", *common, "--batch-size", "16", "--grad-accum", "4", "--out", tmp_path / "single",
                     program="mobilesam_srw.cls")
    assert single.returncode == 0, single.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                            str(free_port()), "-m", "mobilesam_srw.cls", "train", *common, "--batch-size", "16",
                            "--grad-accum", "2", "--out", str(tmp_path / "ranks")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    lines = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("single", "ranks")}
    for name in ("single", "ranks"):  # the run records its global batch: 16 x 1 x 4 == 16 x 2 x 2
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert (config["global_batch"], config["ranks"]) == (64, 1 if name == "single" else 2)
    for a, b in zip(lines["single"], lines["ranks"]):
        for key in ("loss", "distill", "ce", "srw_weight_max", "srw_tail_weight"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    expected, got = load(tmp_path / "single" / "student.pt")["model"], load(tmp_path / "ranks" / "student.pt")["model"]
    for name, value in expected.items():  # BatchNorm's running statistics are rank 0's under DDP, by design
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(got[name], value, atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
def test_eval_bands_tables_and_the_cli(tmp_path, teacher_file):
    for name, srw in (("kd", False), ("kd_srw", True)):
        train(student_config(tmp_path, name, teacher_file, srw=srw, epochs=2, srw_feature="logits"))
    result = run_cli("eval", "--dataset", "digits", "--run", tmp_path / "kd", tmp_path / "kd_srw", "--out",
                     tmp_path / "report", "--no-progress", "--device", "cpu", program="mobilesam_srw.cls")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["ranked_by"] == "logits" and "Eq. 4 over its logits" in result.stdout  # the +SRW run's feature
    again = run_cli("eval", "--dataset", "digits", "--run", tmp_path / "kd", tmp_path / "kd_srw", "--rank-by",
                    "penultimate", "--out", tmp_path / "by_features", "--no-progress", "--device", "cpu",
                    program="mobilesam_srw.cls")
    assert again.returncode == 0, again.stderr[-2000:]
    by_features = json.loads((tmp_path / "by_features" / "summary.json").read_text())
    assert by_features["ranked_by"] == "penultimate" and "pooled penultimate features" in again.stdout
    assert by_features["results"]["kd"]["top1"] == summary["results"]["kd"]["top1"]  # same models, other bands
    assert by_features["results"]["kd"]["bands"] != summary["results"]["kd"]["bands"]
    assert set(summary["results"]) == {"teacher", "kd", "kd_srw"}
    assert list(summary["results"]["kd"]["bands"]) == ["1-16", "17-32", "33-48", "49-64"]
    assert sum(summary["results"]["kd"]["band_counts"].values()) == 448  # 7 full batches of 64
    assert "Δ (kd_srw - kd)" in (tmp_path / "report" / "table.md").read_text()
    table = comparison_tables([read_run(tmp_path / "kd"), read_run(tmp_path / "kd_srw")])
    assert f"| {TEACHER} | {STUDENT} | KD |" in table and "| 0.7 |" in table


def _fake_run(folder: Path, top1_by_epoch: list[float], srw: bool) -> Path:
    folder.mkdir()
    config = {"dataset": "digits", "teacher": TEACHER, "student": STUDENT, "method": "kd", "srw": srw,
              "normalizer": "softmax", "tau": 0.7, "seed": 0}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": 10 * (epoch + 1), "split": "val", "top1": top1})
                                                  + "\n" for epoch, top1 in enumerate(top1_by_epoch)))
    return folder


def test_tables_report_mdistillers_best_top1_by_default_and_say_which(tmp_path):
    """mdistiller (and Tables 1-3) report the best test top-1 over epochs (best_acc); --statistic last the last
    epoch's. The line above the tables names the statistic."""
    runs = [read_run(_fake_run(tmp_path / "kd", [0.50, 0.80, 0.70], False)),
            read_run(_fake_run(tmp_path / "kd_srw", [0.60, 0.75, 0.78], True))]
    best, last = comparison_tables(runs), comparison_tables(runs, "last")
    assert "| KD | 80.00 | 78.00 | -2.00 | 0.7 |" in best and "mdistiller's best_acc" in best
    assert "| KD | 70.00 | 78.00 | +8.00 | 0.7 |" in last and "the last epoch's held-out top-1" in last
    assert best == comparison_tables(runs, "best")


def test_sweep_writes_resumable_launch_commands(tmp_path):
    sweep = Sweep(dataset="cifar100", data=Path("/data"), pairs=["resnet32x4:resnet8x4"], teacher_dir=Path("/teachers"),
                  out=tmp_path / "runs", methods=["kd", "dkd"], taus=[0.5, 1.0], seeds=[0, 1], gpus=2)
    assert len(sweep.runs()) == 2 * 3 * 2  # methods x (vanilla + 2 taus) x seeds
    paths = write_sweep(sweep, tmp_path / "scripts")
    commands = (tmp_path / "scripts" / "commands.txt").read_text().splitlines()
    assert len(commands) == 12 and all("--resume" in c and "torchrun --nproc-per-node 2" in c for c in commands)
    assert "/teachers/resnet32x4_vanilla/ckpt_epoch_240.pth" in commands[0]
    assert "#SBATCH --array=1-12" in (tmp_path / "scripts" / "sweep.sbatch").read_text()
    assert [p.name for p in paths] == ["commands.txt", "run_all.sh", "sweep.sbatch"]


@pytest.mark.parametrize("dataset, gpus", [("cifar100", 1), ("cifar100", 2), ("cifar100", 4), ("cifar100", 8),
                                           ("imagenet", 2), ("imagenet", 4), ("imagenet", 8)])
def test_sweep_keeps_the_recipes_global_batch_on_any_gpu_count(tmp_path, dataset, gpus):
    """Each generated command (torchrun when gpus > 1) trains at the recipe's global batch and lr: its per-rank
    --batch-size is the recipe's batch / gpus, parsed as srw-cls train parses it, and no --lr overrides the recipe."""
    import shlex

    from mobilesam_srw.cls.config import RECIPES

    pair = "resnet32x4:resnet8x4" if dataset == "cifar100" else "ResNet34:ResNet18"
    sweep = Sweep(dataset=dataset, data=Path("/data"), pairs=[pair], teacher_dir=Path("/teachers"),
                  out=tmp_path / "runs", methods=["kd"], gpus=gpus)
    recipe = RECIPES["cifar" if dataset == "cifar100" else "imagenet"]
    for folder, arguments in sweep.runs():
        per_rank = int(arguments[arguments.index("--batch-size") + 1])
        assert per_rank * gpus == recipe.batch_size and "--lr" not in arguments
        config = ClsTrainConfig(out=Path("x"), dataset=dataset, data=Path("/data"), student=pair.split(":")[1],
                                batch_size=per_rank)
        assert config.lr == recipe.lr and config.batch_size * gpus == recipe.batch_size
    for command in sweep.commands():
        words = shlex.split(command.split("; then ")[1].split(" --resume;")[0])
        assert words[:3] == (["torchrun", "--nproc-per-node", str(gpus)] if gpus > 1 else ["srw-cls", "train", "--dataset"])
        assert words[words.index("--batch-size") + 1] == str(recipe.batch_size // gpus)


@pytest.mark.parametrize("dataset, gpus", [("cifar100", 3), ("cifar100", 128), ("imagenet", 3)])
def test_sweep_refuses_a_gpu_count_that_does_not_divide_the_batch(tmp_path, dataset, gpus):
    from mobilesam_srw.errors import SrwError

    pair = "resnet32x4:resnet8x4" if dataset == "cifar100" else "ResNet34:ResNet18"
    sweep = Sweep(dataset=dataset, data=Path("/data"), pairs=[pair], teacher_dir=Path("/teachers"),
                  out=tmp_path / "runs", gpus=gpus)
    with pytest.raises(SrwError, match=f"--gpus {gpus} does not divide the {dataset} recipe's global batch"):
        write_sweep(sweep, tmp_path / "scripts")
    assert not (tmp_path / "scripts").exists()


def test_train_teacher_names_its_network_model(tmp_path, monkeypatch):
    """``srw-cls train-teacher --model NAME``; the old ``--student`` still reads the same; neither is one line."""
    from mobilesam_srw.cls import train as train_module

    from conftest import run_in_process

    configs = []
    monkeypatch.setattr(train_module, "train", configs.append)
    for flag in ("--model", "--student"):
        result = run_in_process("train-teacher", "--dataset", "digits", flag, TEACHER, "--out", tmp_path / flag,
                                program="srw-cls")
        assert result.returncode == 0, result.stderr
    assert [(c.student, c.method) for c in configs] == [(TEACHER, None)] * 2
    assert_one_line_error(run_in_process("train-teacher", "--dataset", "digits", "--out", tmp_path / "x",
                                         program="srw-cls"), "--model is required")
    usage = run_in_process("train-teacher", "--help", program="srw-cls").stdout
    assert "--model NAME" in usage and "--student" not in usage and "--teacher" not in usage


def test_classification_trains_in_fp32_as_mdistiller():
    from mobilesam_srw.engine.config import EngineConfig

    assert ClsTrainConfig(out=Path("x"), student=STUDENT, dataset="digits").amp == "off"
    assert EngineConfig.__dataclass_fields__["amp"].default == "auto"  # SAM and CLIP keep bf16 on GPUs


@pytest.mark.slow
def test_bad_input(tmp_path, teacher_file):
    from conftest import run_in_process

    def cls(*args):
        return run_in_process(*args, program="srw-cls")

    out = tmp_path / "out"
    base = ["--dataset", "digits", "--student", STUDENT, "--out", out, "--no-progress", "--device", "cpu"]
    assert_one_line_error(cls("train", *base), "--method is required")
    assert_one_line_error(cls("train", *base, "--method", "kd"), "needs --teacher and --teacher-checkpoint")
    assert_one_line_error(cls("train", *base, "--method", "kd", "--teacher", TEACHER, "--teacher-checkpoint",
                              tmp_path / "missing.pth"), "--teacher-checkpoint not found")
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": create("cnn_digits_student", 10, "digits").state_dict()}, wrong)
    assert_one_line_error(cls("train", *base, "--method", "kd", "--teacher", TEACHER, "--teacher-checkpoint", wrong),
                          "does not fit")
    assert_one_line_error(cls("train-teacher", "--dataset", "cifar100", "--model", "resnet8", "--out", out),
                          "--data is required")
    assert_one_line_error(cls("train-teacher", *base, "--lr", "nan"), "--lr must be a finite number")
    assert_one_line_error(cls("eval", "--dataset", "digits", "--run", tmp_path / "nothing"), "checkpoint not found")
    assert not out.exists()


def test_the_demo_trains_every_configuration_and_writes_its_report(tmp_path):
    """``srw-cls demo`` (README's main job for classification) at one seed and one epoch."""
    from conftest import run_in_process

    out = tmp_path / "demo"
    result = run_in_process("demo", "--out", out, "--seeds", "1", "--epochs", "1", "--no-progress", program="srw-cls")
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    for row in ("| KD |", "| KD + SRW |", "| DKD |", "| DKD + SRW |"):
        assert row in report
    assert "1 seed each" in report and "One seed (%), so no spread" in report
    evaluation = run_in_process("eval", "--run", out / "runs" / "kd_seed0", "--no-progress", "--device", "cpu",
                                program="srw-cls")  # the data set is the runs' own
    assert evaluation.returncode == 0 and "| kd_seed0 |" in evaluation.stdout, evaluation.stderr
    rerun = run_in_process("demo", "--out", out, "--no-progress", program="srw-cls")  # 20 epochs: other runs
    assert_one_line_error(rerun, "holds a srw-cls demo of other settings ({'epochs': 1, 'tau': 0.7})")
