"""``srw-clip bands``: Table 4 of an ``srw-clip eval`` as a figure (the MSE and SRW students' zero-shot top-1 by
avesim band, and SRW minus MSE paired by seed), PNG and PDF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option
from mobilesam_srw.viz.bands import BandRun, band_values, draw_bands, read_summary

BASELINE_LOSS = "mse"


@dataclass(kw_only=True)
class ClipBandsConfig:
    """Which evaluation to draw, and where."""

    eval: Path = option(help="an srw-clip eval --out folder (or its summary.json)")
    out: Path = option(help="figure folder (bands.png, bands.pdf)")


def clip_band_runs(summary: dict) -> tuple[list[BandRun], list[str]]:
    """The students of an ``srw-clip eval`` summary as :class:`BandRun` s (arm = the run's loss), and the band names."""
    runs, bands = summary.get("runs"), summary.get("bands")
    if not isinstance(runs, list) or not isinstance(bands, dict) or not isinstance(bands.get("labels"), list):
        raise SrwError("the summary has no runs and bands of srw-clip eval (an older eval? rerun it)")
    names = [str(label) for label in bands["labels"]]
    drawn = []
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("loss"), str):
            raise SrwError("a run of the summary has no loss (an older eval? rerun it)")
        seed = run.get("seed") if isinstance(run.get("seed"), int) else None
        accuracy = band_values(run.get("bands"), names, f"run {run.get('name')}")
        baseline = BASELINE_LOSS if run["loss"] != BASELINE_LOSS else None
        drawn.append(BandRun(run["loss"], baseline, seed, accuracy))
    return drawn, names


def draw_clip_bands(config: ClipBandsConfig) -> list[Path]:
    """Draw the evaluation's bands; returns the PNG and PDF paths."""
    check_options(config)
    summary = read_summary(config.eval)
    runs, names = clip_band_runs(summary)
    return draw_bands(runs, names, "Table 4 bands: zero-shot top-1 by teacher avesim rank", config.out)
