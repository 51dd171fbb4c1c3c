"""Shared fixtures: SA-1B-format sample data and precomputed shards, made once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.student import build_student


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            program: str = "mobilesam_srw") -> subprocess.CompletedProcess:
    """``srw-sam ARGS`` (or ``python -m PROGRAM ARGS``) in a subprocess; returns it with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", program, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


def run_in_process(*args: str, program: str = "srw-sam") -> subprocess.CompletedProcess:
    """The CLI run in this process (no interpreter start-up): its exit code and what it printed.

    For checks of argument and input handling; commands that train or spawn ranks use :func:`run_cli`.
    """
    import contextlib
    import io

    from mobilesam_srw import cli

    main = {"srw-sam": cli.main, "srw-cls": cli.cls_main, "srw-clip": cli.clip_main}[program]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def sample_sa1b(tmp_path_factory) -> Path:
    """12 photo variants in three SA-1B tars of 4, longest side 256 px."""
    folder = tmp_path_factory.mktemp("sa1b")
    write_sample_sa1b(folder, num_images=12, images_per_tar=4, seed=0, max_side=256)
    return folder


def precompute_tiny(sa1b: Path | list, out: Path, **overrides) -> dict:
    """A tiny-teacher precompute of all of ``sa1b`` into ``out`` (no progress bar, in process)."""
    options = dict(teacher="tiny", subset="all", shard_size=4, batch_size=2, workers=0, progress=False)
    options.update(overrides)
    inputs = [str(p) for p in sa1b] if isinstance(sa1b, list) else [str(sa1b)]
    return run_precompute(PrecomputeConfig(inputs=inputs, out=out, **options))


@pytest.fixture(scope="session")
def tiny_shards(sample_sa1b, tmp_path_factory) -> Path:
    """fp16 shards of ``sample_sa1b`` from a tiny random teacher at 256 px."""
    out = tmp_path_factory.mktemp("shards")
    precompute_tiny(sample_sa1b, out)
    return out


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory) -> list:
    """Two random tinyvit-micro students saved as run folders (training is tested elsewhere)."""
    folder = tmp_path_factory.mktemp("runs")
    runs = []
    for seed, name in ((0, "mse"), (1, "srw")):
        torch.manual_seed(seed)
        run = folder / name
        checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student("tinyvit-micro", 256)))
        runs.append(run)
    return runs
