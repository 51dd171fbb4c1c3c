"""Training logs: metrics as JSON lines and TensorBoard scalars (written by rank 0 only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mobilesam_srw.atomic import atomic_file, open_unlinked, output_subfolder

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _cut_back(path: Path, step: int) -> None:
    """Keep the lines of ``path`` up to ``step`` (a resumed run logs the steps after it again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    with atomic_file(path, "w") as stream:
        stream.write("".join(f"{line}\n" for line in kept))


def _open_log(path: Path, append: bool):
    """``path`` opened for appending (or anew), never through a link planted at its name."""
    descriptor = open_unlinked(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC))
    return os.fdopen(descriptor, "a" if append else "w")


class RunLogger:
    """Writes one JSON line per logged step to ``metrics.jsonl`` and mirrors it to TensorBoard.

    Args:
        out: the run folder.
        start_step: the step the run starts from: 0 starts a new log; a resumed run keeps the lines up to
            its checkpoint's step and drops later ones (logged after the checkpoint, before a kill).
        enabled: false on ranks other than 0 (they log nothing).
    """

    def __init__(self, out: Path, start_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        path = Path(out) / METRICS_FILE
        if start_step:
            _cut_back(path, start_step)
        self.metrics = _open_log(path, append=bool(start_step))
        self.tensorboard = SummaryWriter(str(output_subfolder(Path(out) / TENSORBOARD_DIR)),
                                         purge_step=start_step or None)

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
