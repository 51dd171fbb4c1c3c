"""What every SAM figure command (``heatmap``, ``compare``) takes: the shards, the samples to draw, the folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option


@dataclass(kw_only=True)
class FigureConfig:
    """What every figure command takes: the shards, the samples to draw, the folder."""

    shards: list[str] = option(help="precompute shards (folders, files or globs)")
    out: Path = option(help="figure folder")
    keys: list[str] | None = option(None, help="sample keys to draw (default: the first --first)")
    first: int = option(4, minimum=1, help="draw the first N samples")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")

    def check(self) -> None:
        """Every option's bounds and choices, before any work (one :class:`SrwError` line)."""
        check_options(self)
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SrwError(f"--out {self.out} exists and is not a folder")
