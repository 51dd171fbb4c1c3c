"""The paper's classification tables from a set of ``srw-cls`` run folders.

Each run's result is, by default, its best held-out top-1 over epochs (``metrics.jsonl``, ``split: val``,
one line per epoch), as mdistiller reports it (``best_acc``) and the paper's Tables 1-3 follow; ``last``
takes the last epoch's instead (:data:`mobilesam_srw.metrics.TOP1_STATISTICS`), and every table says
which. Runs that differ only in seed are pooled as mean ± std. Layouts: Tables 1-3 (vanilla / +SRW / Δ per teacher-student pair and
method), Table 7 (Reversing vs ours), Table 8 (a tau sweep), Table 9 (SumNormalizer vs ours).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.errors import SrwError
from mobilesam_srw.metrics import DEFAULT_TOP1_STATISTIC, TOP1_STATISTICS, over_epochs


@dataclass(frozen=True)
class RunResult:
    """One finished (or stopped) run: what it was and its held-out top-1 (%) after each epoch."""

    path: Path
    dataset: str
    teacher: str
    student: str
    method: str
    srw: bool
    normalizer: str
    tau: float
    seed: int
    epoch_top1: tuple[float, ...]

    def top1(self, statistic: str = DEFAULT_TOP1_STATISTIC) -> float:
        """The run's top-1 (%) as ``statistic`` reports it: ``best`` over epochs (mdistiller's) or ``last``."""
        return over_epochs(list(self.epoch_top1), statistic)

    @property
    def pair(self) -> tuple[str, str, str]:
        return self.teacher, self.student, self.method


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _name(value: object) -> bool:
    return isinstance(value, str) and bool(value)


# config.json fields a table reads: what each must be.
_CONFIG_CHECKS = {
    "dataset": (_name, "a name"), "teacher": (_name, "a name"), "student": (_name, "a name"),
    "method": (_name, "a name"), "normalizer": (_name, "a name"),
    "srw": (lambda value: isinstance(value, bool), "true or false"),
    "tau": (_number, "a finite number"),
    "seed": (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
}


def read_run(path: Path) -> RunResult:
    """A run folder's configuration and its validation top-1 of every epoch; anything missing or malformed is one
    line naming it."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
        lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError, RecursionError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SrwError(f"{path} is not a readable srw-cls run folder: {reason}") from None
    if not isinstance(config, dict) or not config.get("method"):
        raise SrwError(f"{path}: no validation result of a distillation run (train with held-out data first)")
    for name, (valid, expected) in _CONFIG_CHECKS.items():
        if not valid(config.get(name)):
            raise SrwError(f"{path / 'config.json'}: {name} is {json.dumps(config.get(name))[:80]}, not {expected}")
    if not all(isinstance(line, dict) for line in lines):
        raise SrwError(f"{path / 'metrics.jsonl'}: line {[isinstance(line, dict) for line in lines].index(False) + 1} "
                       "is not a JSON object")
    validations = [line for line in lines if line.get("split") == "val" and "top1" in line]
    if not validations:
        raise SrwError(f"{path}: no validation result of a distillation run (train with held-out data first)")
    for line in validations:
        top1 = line["top1"]
        if not _number(top1) or not 0 <= top1 <= 1:
            raise SrwError(f"{path / 'metrics.jsonl'}: the validation top-1 is {json.dumps(top1)[:80]}, not a fraction "
                           f"in [0, 1] (step {json.dumps(line.get('step'))[:20]})")
    return RunResult(path, config["dataset"], config["teacher"], config["student"], config["method"], config["srw"],
                     config["normalizer"], float(config["tau"]), config["seed"],
                     tuple(100.0 * line["top1"] for line in validations))


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _delta(base: list[float], other: list[float]) -> str:
    return f"{statistics.mean(other) - statistics.mean(base):+.2f}" if base and other else "—"


def _grouped(results: list[RunResult], statistic: str) -> dict:
    groups: dict = defaultdict(list)
    for r in results:
        variant = ("srw", r.normalizer, r.tau) if r.srw else ("vanilla",)
        groups[(r.pair, variant)].append(r.top1(statistic))
    return groups


def _best_tau(groups: dict, pair: tuple, normalizer: str) -> float | None:
    taus = {variant[2]: statistics.mean(v) for (p, variant), v in groups.items()
            if p == pair and variant[:2] == ("srw", normalizer)}
    return max(taus, key=taus.get) if taus else None


def comparison_tables(results: list[RunResult], statistic: str = DEFAULT_TOP1_STATISTIC) -> str:
    """Markdown: Tables 1-3, and 7-9 where the runs hold their variants; each run's top-1 is ``statistic``
    (``best`` over epochs, mdistiller's and the paper's; or ``last``), named above the tables."""
    if statistic not in TOP1_STATISTICS:
        raise SrwError(f"--statistic must be one of {', '.join(TOP1_STATISTICS)}, got {statistic!r}")
    groups = _grouped(results, statistic)
    pairs = sorted({r.pair for r in results})
    lines = [f"Top-1 (%) on the held-out set: each run's {TOP1_STATISTICS[statistic]} (`--statistic {statistic}`); "
             "mean ± std over seeds where a configuration has several. +SRW is the best tau of the softmax "
             "normalizer (Eq. 5).", "",
             "| Teacher | Student | Method | vanilla | +SRW | Δ | tau |", "|---|---|---|---|---|---|---|"]
    for pair in pairs:
        tau = _best_tau(groups, pair, "softmax")
        vanilla, srw = groups.get((pair, ("vanilla",)), []), groups.get((pair, ("srw", "softmax", tau)), [])
        lines.append(f"| {pair[0]} | {pair[1]} | {pair[2].upper()} | {_cell(vanilla)} | {_cell(srw)} | "
                     f"{_delta(vanilla, srw)} | {'—' if tau is None else f'{tau:g}'} |")
    for normalizer, title in (("reverse", "Table 7: Reversing (softmax(+avesim/tau)) vs ours"),
                              ("sum", "Table 9: SumNormalizer (Eq. 7) vs ours")):
        rows = []
        for pair in pairs:
            other_tau = _best_tau(groups, pair, normalizer)
            tau = _best_tau(groups, pair, "softmax")
            if other_tau is None or tau is None:
                continue
            other, ours = groups[(pair, ("srw", normalizer, other_tau))], groups[(pair, ("srw", "softmax", tau))]
            rows.append(f"| {pair[0]} | {pair[1]} | {pair[2].upper()} | {_cell(other)} | {_cell(ours)} | "
                        f"{_delta(other, ours)} |")
        if rows:
            lines += ["", f"{title}:", "", f"| Teacher | Student | Method | {normalizer} | ours | Δ |",
                      "|---|---|---|---|---|---|", *rows]
    taus = sorted({r.tau for r in results if r.srw and r.normalizer == "softmax"})
    if len(taus) > 1:
        lines += ["", "Table 8: the tau sweep (softmax):", "",
                  "| Teacher | Student | Method | " + " | ".join(f"tau {t:g}" for t in taus) + " |",
                  "|---|---|---|" + "---|" * len(taus)]
        for pair in pairs:
            lines.append(f"| {pair[0]} | {pair[1]} | {pair[2].upper()} | "
                         + " | ".join(_cell(groups.get((pair, ("srw", "softmax", t)), [])) for t in taus) + " |")
    return "\n".join(lines) + "\n"
