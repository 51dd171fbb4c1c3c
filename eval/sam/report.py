"""The evaluation report: ``summary.json``, ``per_image.csv`` and ``table.md`` (Table 6's layout).

mIoU pools every (image, prompt, mask) IoU of a run at a grid; the quartile rows pool the
prompts whose teacher patch lies in that quartile of its image's average similarity
(Q1 = lowest avesim: the tail patches SRW weights up). Values are percentages.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.eval.sam.grid import QUARTILES

SUMMARY_FILE = "summary.json"
PER_IMAGE_FILE = "per_image.csv"
TABLE_FILE = "table.md"


def _percent(total: float, count: int) -> float | None:
    return 100.0 * total / count if count else None


def _pooled(rows: list[dict], prefix: str = "") -> float | None:
    return _percent(sum(r[f"{prefix}iou_sum"] for r in rows), sum(r[f"{prefix}count"] for r in rows))


def summarize(results: list[dict], runs: list[str], grids: list[int]) -> dict:
    """Grid mode's summary: mIoU (%) per run and grid, pooled over images, and per avesim quartile."""
    summary = {"miou": {}, "miou_by_quartile": {}, "prompts": {}}
    for run in runs:
        summary["miou"][run], summary["miou_by_quartile"][run], summary["prompts"][run] = {}, {}, {}
        for grid in grids:
            chosen = [r for r in results if r["run"] == run and r["grid"] == grid]
            summary["miou"][run][str(grid)] = _pooled(chosen)
            summary["prompts"][run][str(grid)] = sum(r["count"] for r in chosen)
            summary["miou_by_quartile"][run][str(grid)] = [_pooled(chosen, f"q{q + 1}_") for q in range(QUARTILES)]
    summary["images"] = len({r["key"] for r in results})
    return summary


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_table(summary: dict, runs: list[str], grids: list[int]) -> str:
    header = "| Method | " + " | ".join(f"{g}x{g} points" for g in grids) + " |\n"
    header += "|---|" + "---|" * len(grids) + "\n"
    lines = [f"| {run} | " + " | ".join(_cell(summary["miou"][run][str(g)]) for g in grids) + " |" for run in runs]
    if len(runs) >= 2 and all(summary["miou"][r][str(g)] is not None for r in runs[:: len(runs) - 1] for g in grids):
        first, last = runs[0], runs[-1]
        lines.append(f"| Δ ({last} - {first}) | " + " | ".join(
            f"{summary['miou'][last][str(g)] - summary['miou'][first][str(g)]:+.2f}" for g in grids) + " |")
    quartile_lines = [
        f"| {run} Q{q + 1}{' (tail)' if q == 0 else ' (head)' if q == QUARTILES - 1 else ''} | "
        + " | ".join(_cell(summary["miou_by_quartile"][run][str(g)][q]) for g in grids) + " |"
        for run in runs for q in range(QUARTILES)
    ]
    return (f"mIoU (%) of each student's masks against the teacher's, {summary['images']} images, "
            f"match `{summary['match']}`.\n\n" + header + "\n".join(lines) + "\n\n"
            "By avesim quartile of the prompt's teacher patch (Q1 = lowest average similarity):\n\n"
            + header + "\n".join(quartile_lines) + "\n")


def grid_rows(results: list[dict]) -> list[dict]:
    """Per-image CSV rows of grid mode."""
    rows = []
    for r in sorted(results, key=lambda r: (r["key"], r["run"], r["grid"])):
        quartiles = [_pooled([r], f"q{q + 1}_") for q in range(QUARTILES)]
        rows.append({"key": r["key"], "run": r["run"], "grid": r["grid"], "miou": f"{_pooled([r]) or 0.0:.4f}",
                     "prompts": r["count"],
                     **{f"miou_q{q + 1}": "" if v is None else f"{v:.4f}" for q, v in enumerate(quartiles)}})
    return rows


def write_report(out: Path, summary: dict, rows: list[dict], table: str) -> None:
    """``summary.json``, ``per_image.csv`` (one row per image and run) and ``table.md``, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(field for row in rows for field in row))  # every row's, in first-seen order
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out / PER_IMAGE_FILE) as temporary:
        temporary.write_text(buffer.getvalue())
    with atomic_path(out / TABLE_FILE) as temporary:
        temporary.write_text(table)
    write_json(out / SUMMARY_FILE, summary)
