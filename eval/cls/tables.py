"""The paper's classification tables from a set of ``srw-cls`` run folders.

Each run's result is its last held-out top-1 (``metrics.jsonl``, ``split: val``); runs that differ only
in seed are pooled as mean ± std. Layouts: Tables 1-3 (vanilla / +SRW / Δ per teacher-student pair and
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


@dataclass(frozen=True)
class RunResult:
    """One finished (or stopped) run: what it was and its last held-out top-1 (%)."""

    path: Path
    dataset: str
    teacher: str
    student: str
    method: str
    srw: bool
    normalizer: str
    tau: float
    seed: int
    top1: float

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
    """A run folder's configuration and last validation top-1; anything missing or malformed is one line naming it."""
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
    top1 = validations[-1]["top1"]
    if not _number(top1) or not 0 <= top1 <= 1:
        raise SrwError(f"{path / 'metrics.jsonl'}: the last validation top-1 is {json.dumps(top1)[:80]}, "
                       "not a fraction in [0, 1]")
    return RunResult(path, config["dataset"], config["teacher"], config["student"], config["method"], config["srw"],
                     config["normalizer"], float(config["tau"]), config["seed"], 100.0 * top1)


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _delta(base: list[float], other: list[float]) -> str:
    return f"{statistics.mean(other) - statistics.mean(base):+.2f}" if base and other else "—"


def _grouped(results: list[RunResult]) -> dict:
    groups: dict = defaultdict(list)
    for r in results:
        variant = ("srw", r.normalizer, r.tau) if r.srw else ("vanilla",)
        groups[(r.pair, variant)].append(r.top1)
    return groups


def _best_tau(groups: dict, pair: tuple, normalizer: str) -> float | None:
    taus = {variant[2]: statistics.mean(v) for (p, variant), v in groups.items()
            if p == pair and variant[:2] == ("srw", normalizer)}
    return max(taus, key=taus.get) if taus else None


def comparison_tables(results: list[RunResult]) -> str:
    """Markdown: Tables 1-3, and 7-9 where the runs hold their variants."""
    groups = _grouped(results)
    pairs = sorted({r.pair for r in results})
    lines = ["Top-1 (%) on the held-out set; mean ± std over seeds where a configuration has several. +SRW is the "
             "best tau of the softmax normalizer (Eq. 5).", "",
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
