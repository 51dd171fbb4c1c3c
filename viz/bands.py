"""Table 4 as a figure, for every sample-wise task: accuracy per avesim band, each arm (a baseline and its
+SRW runs) as mean ± std over seeds, and beside it the +SRW run minus its baseline, paired by seed.

The bands are the paper's Table 4 (:mod:`mobilesam_srw.metrics`): each fixed evaluation batch is ranked by
the teacher's average similarity (Eq. 4), the last band being the tail that SRW weights up. Each task's
module (``viz/cls.py``, ``viz/clip.py``) reads its evaluation's ``summary.json`` into :class:`BandRun` s.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.atomic import read_json
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.viz.figure_io import FULL_WIDTH_INCHES, PAPER_STYLE, plt, save_figure

FIGURE_STEM = "bands"


@dataclass(frozen=True)
class BandRun:
    """One evaluated run: its arm, its baseline arm (None for a baseline), its seed, its accuracy per band.

    Args:
        arm: e.g. ``"KD + SRW"`` or ``"srw"``.
        baseline: the arm it is compared with, e.g. ``"KD"``; None when it is a baseline itself.
        seed: pairs it with the baseline run of the same seed.
        accuracy: percent per band, most typical band first, the tail last (NaN: an empty band).
    """

    arm: str
    baseline: str | None
    seed: int | None
    accuracy: tuple[float, ...]


def read_summary(path: Path) -> dict:
    """An evaluation's ``summary.json`` (its folder, or the file), checked to be a JSON object."""
    path = Path(path)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise SrwError(f"{path}: no summary.json of an evaluation (run eval with --out first)")
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise SrwError(f"{path} is not an evaluation summary (not a JSON object)")
    return summary


def band_values(bands: object, names: list[str], where: str) -> tuple[float, ...]:
    """``{band name: percent or null}`` -> the values in ``names`` order (null: NaN); one line if malformed."""
    if not isinstance(bands, dict) or list(bands) != names:
        raise SrwError(f"{where}: its bands are not {names}")
    values = []
    for name in names:
        value = bands[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SrwError(f"{where}: band {name} is {value!r:.40}, not a percentage")
        values.append(float("nan") if value is None else float(value))
    return tuple(values)


def _mean_std(rows: list[tuple[float, ...]]) -> tuple[list[float], list[float]]:
    columns = list(zip(*rows))
    means = [statistics.fmean(c) if all(math.isfinite(v) for v in c) else float("nan") for c in columns]
    spreads = [statistics.stdev(c) if len(c) > 1 and all(math.isfinite(v) for v in c) else 0.0 for c in columns]
    return means, spreads


def _paired_differences(runs: list[BandRun]) -> dict[str, list[tuple[float, ...]]]:
    """Arm -> its per-seed differences from its baseline's run of the same seed (unpaired runs are left out)."""
    by_seed = {(run.arm, run.seed): run for run in runs}
    differences: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for run in runs:
        base = by_seed.get((run.baseline, run.seed)) if run.baseline is not None else None
        if base is not None:
            differences[run.arm].append(tuple(a - b for a, b in zip(run.accuracy, base.accuracy)))
    return differences


def bands_figure(runs: list[BandRun], band_names: list[str], title: str, measure: str = "top-1 accuracy (%)"):
    """Two panels: each arm's accuracy per band (mean ± std over seeds), and each +SRW arm minus its
    baseline per band (mean ± std of the seed-paired differences)."""
    arms: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for run in runs:
        arms[run.arm].append(run.accuracy)
    differences = _paired_differences(runs)
    positions = list(range(len(band_names)))
    labels = [f"{name}\n(tail)" if index == len(band_names) - 1 else name for index, name in enumerate(band_names)]
    with plt.rc_context(PAPER_STYLE):
        figure, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH_INCHES, 2.6), constrained_layout=True)
        for arm, rows in arms.items():
            means, spreads = _mean_std(rows)
            left.errorbar(positions, means, yerr=spreads, marker="o", markersize=3, capsize=2, linewidth=1,
                          label=f"{arm} (n={len(rows)})")
        left.set(xticks=positions, xticklabels=labels, xlabel="rank by teacher avesim within each batch",
                 ylabel=measure, title="per band, mean ± std over seeds")
        left.legend(frameon=False)
        right.axhline(0.0, color="grey", linewidth=0.6)
        for arm, rows in differences.items():
            means, spreads = _mean_std(rows)
            right.errorbar(positions, means, yerr=spreads, marker="s", markersize=3, capsize=2, linewidth=1,
                           label=f"{arm} (n={len(rows)} seed pairs)")
        right.set(xticks=positions, xticklabels=labels, xlabel="rank by teacher avesim within each batch",
                  ylabel=f"difference ({measure.split(' (')[0]}, points)",
                  title="+SRW minus its baseline, same seed")
        if differences:
            right.legend(frameon=False)
        else:
            right.text(0.5, 0.5, "no +SRW run has a baseline run of the same seed", ha="center", va="center",
                       transform=right.transAxes)
        figure.suptitle(title)
    return figure


def draw_bands(runs: list[BandRun], band_names: list[str], title: str, out: Path) -> list[Path]:
    """Draw :func:`bands_figure` into ``out/bands.png`` and ``.pdf`` (one writer per folder)."""
    if not runs:
        raise SrwError("the evaluation holds no runs to draw")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SrwError(f"--out {out} exists and is not a folder")
    figure = bands_figure(runs, band_names, title)
    with output_lock(out):
        return save_figure(figure, out / FIGURE_STEM)
