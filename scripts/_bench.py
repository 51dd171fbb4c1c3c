"""Helpers shared by the ``scripts/bench_*.py`` benchmarks (imported as a sibling module)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from mobilesam_srw.atomic import write_json  # noqa: F401  (re-exported for the scripts)


def machine_description() -> str:
    """CPU model, core count, torch threads and version, and the GPU if one is visible."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def seconds_per_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats
