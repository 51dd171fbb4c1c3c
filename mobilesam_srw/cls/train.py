"""``srw-cls train`` and ``train-teacher``: a classification run on the engine.

The loop, run folder, checkpoints and logs are the engine's (:mod:`mobilesam_srw.engine.fit`);
:class:`~mobilesam_srw.cls.task.ClsTask` says what is trained or distilled. The held-out top-1 is logged
after every epoch (``metrics.jsonl``, ``split: val``); the run ends with both of mdistiller's numbers:
the best over epochs (its ``best_acc``, what Tables 1-3 report) and the last epoch's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.cls.task import ClsTask
from mobilesam_srw.engine import fit
from mobilesam_srw.engine.run_log import METRICS_FILE
from mobilesam_srw.metrics import over_epochs

__all__ = ["ClsTrainConfig", "train", "validation_top1"]


def validation_top1(out: Path) -> list[float]:
    """The held-out top-1 (a fraction) after each epoch of the run in ``out``, in order (``metrics.jsonl``)."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line["top1"] for line in lines if isinstance(line, dict) and line.get("split") == "val" and "top1" in line]


def train(config: ClsTrainConfig) -> dict:
    """Train (or resume) a run; returns the last step's metrics, the last validation (``val_top1``, ...) and
    the best held-out top-1 over epochs (``val_best_top1``, ``val_best_epoch``, counted from 1)."""
    result = fit(ClsTask(config))
    epochs = validation_top1(config.out)
    if not epochs:
        return result
    best = over_epochs(epochs, "best")
    summary = {"val_best_top1": best, "val_best_epoch": epochs.index(best) + 1}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"train: held-out top-1 {100 * best:.2f}% best over {len(epochs)} epochs (epoch "
              f"{summary['val_best_epoch']}; mdistiller's best_acc, the tables' default), {100 * epochs[-1]:.2f}% "
              "at the last epoch", file=sys.stderr)
    return {**result, **summary}
