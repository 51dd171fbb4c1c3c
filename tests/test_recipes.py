"""docs/recipes run as written: plain PyTorch DDP, Lightning, Hugging Face Trainer, patch-wise distillation.

The Lightning and Hugging Face recipes need the ``recipes`` extra and are skipped without it; the plain
PyTorch one always runs. Under 2 gloo ranks the plain and Hugging Face recipes train the same student as
one process on the whole batch.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes"


def recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, ranks: int = 1, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A recipe in a subprocess, alone or under torchrun (``--standalone``: a free port of its own)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True, text=True, env=env,
                            cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def max_difference(first: Path, second: Path) -> float:
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def test_plain_pytorch_recipe_trains_a_student():
    result = recipe("ddp_kd").main(["--epochs", "1"])
    assert math.isfinite(result["loss"]) and result["accuracy"] > 0.8


@pytest.mark.slow
def test_plain_pytorch_recipe_on_two_gloo_ranks_trains_the_same_student(tmp_path):
    script = RECIPES / "ddp_kd.py"
    run(script, "--epochs", "1", "--batch-size", "32", "--save", tmp_path / "one.pt")
    ranks = run(script, "--epochs", "1", "--batch-size", "8", "--accum", "2", "--save", tmp_path / "two.pt", ranks=2)
    assert "student accuracy" in ranks.stdout
    assert max_difference(tmp_path / "one.pt", tmp_path / "two.pt") < 1e-5


def test_lightning_recipe_trains_a_student(tmp_path, monkeypatch):
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    result = recipe("lightning_kd").main(["--epochs", "1"])
    assert math.isfinite(result["loss"]) and result["accuracy"] > 0.8


@pytest.mark.slow
def test_lightning_recipe_on_two_ddp_processes(tmp_path):
    pytest.importorskip("lightning")
    result = run(RECIPES / "lightning_kd.py", "--devices", "2", "--epochs", "1", cwd=tmp_path)
    assert "student accuracy" in result.stdout


def test_hugging_face_recipe_trains_a_student(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    result = recipe("hf_trainer_kd").main(["--epochs", "1", "--out", str(tmp_path)])
    assert math.isfinite(result["loss"]) and result["accuracy"] > 0.8


@pytest.mark.slow
def test_hugging_face_recipe_on_two_gloo_ranks_trains_the_same_student(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    script = RECIPES / "hf_trainer_kd.py"
    run(script, "--epochs", "1", "--batch-size", "32", "--out", tmp_path / "one", "--save", tmp_path / "one.pt")
    run(script, "--epochs", "1", "--batch-size", "16", "--out", tmp_path / "two", "--save", tmp_path / "two.pt",
        ranks=2)
    assert max_difference(tmp_path / "one.pt", tmp_path / "two.pt") < 1e-5


@pytest.mark.slow  # LiteMedSAM's real encoder on CPU: seconds per image
def test_patch_wise_recipe_on_litemedsam(capsys):
    result = recipe("patchwise_feature_kd").main(["--images", "2", "--steps", "3"])
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    assert 4096 < result["valid_patches"] < 2 * 4096  # coffee is 171 x 256: its padding patches are masked
    assert "SRW loss" in capsys.readouterr().out
