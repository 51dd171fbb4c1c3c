"""Training logs: metrics as JSON lines and TensorBoard scalars (written by rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLogger:
    """Appends one JSON line per logged step to ``metrics.jsonl`` and mirrors it to TensorBoard.

    Args:
        out: the run folder.
        enabled: false on ranks other than 0 (they log nothing).
    """

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.metrics = open(Path(out) / METRICS_FILE, "a")
        self.tensorboard = SummaryWriter(str(Path(out) / TENSORBOARD_DIR))

    def log(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps({"step": step, "split": prefix, **values}) + "\n")
        self.metrics.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.metrics.close()
            self.tensorboard.close()
