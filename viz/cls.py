"""``srw-cls bands``: Table 4 of an ``srw-cls eval`` as a figure (each method's baseline and +SRW runs by
avesim band, and +SRW minus its baseline paired by seed), PNG and PDF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option
from mobilesam_srw.viz.bands import BandRun, band_values, draw_bands, read_summary


@dataclass(kw_only=True)
class ClsBandsConfig:
    """Which evaluation to draw, and where."""

    eval: Path = option(help="an srw-cls eval --out folder (or its summary.json)")
    out: Path = option(help="figure folder (bands.png, bands.pdf)")


def cls_band_runs(summary: dict) -> tuple[list[BandRun], list[str]]:
    """The distilled runs of an ``srw-cls eval`` summary as :class:`BandRun` s (arm ``KD`` or ``KD + SRW``), and
    the band names; runs without a method (teachers) are left out."""
    results, arms = summary.get("results"), summary.get("arms")
    if not isinstance(results, dict) or not isinstance(arms, dict) or "teacher" not in results:
        raise SrwError("the summary has no results and arms of srw-cls eval (an older eval? rerun it)")
    names = list((results["teacher"] or {}).get("bands") or {})
    runs = []
    for label, facts in arms.items():
        if not isinstance(facts, dict) or not isinstance(facts.get("method"), str):
            continue
        method = facts["method"].upper()
        srw = facts.get("srw") is True
        seed = facts.get("seed") if isinstance(facts.get("seed"), int) else None
        accuracy = band_values((results.get(label) or {}).get("bands"), names, f"run {label}")
        runs.append(BandRun(f"{method} + SRW" if srw else method, method if srw else None, seed, accuracy))
    return runs, names


def draw_cls_bands(config: ClsBandsConfig) -> list[Path]:
    """Draw the evaluation's bands; returns the PNG and PDF paths."""
    check_options(config)
    summary = read_summary(config.eval)
    runs, names = cls_band_runs(summary)
    title = f"Table 4 bands on {summary.get('dataset', 'the evaluation set')}: top-1 by teacher avesim rank"
    return draw_bands(runs, names, title, config.out)
