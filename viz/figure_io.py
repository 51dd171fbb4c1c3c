"""Figures for papers: which samples go where (:class:`FigureConfig`), and saving them as PNG
(300 dpi) and vector PDF, each written atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from mobilesam_srw.atomic import atomic_path  # noqa: E402
from mobilesam_srw.errors import SrwError  # noqa: E402
from mobilesam_srw.options import check_options, option  # noqa: E402

PAPER_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
               "ytick.labelsize": 7, "pdf.fonttype": 42}
FULL_WIDTH_INCHES = 7.0  # a two-column paper's text width (ACCV/LNCS: ~4.8 in; scale down freely, fonts stay >= 6 pt)


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


def save_figure(figure: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths and closes the figure."""
    paths = []
    for suffix, options in ((".png", {"dpi": 300}), (".pdf", {})):
        path = Path(f"{stem}{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=suffix[1:], bbox_inches="tight", pad_inches=0.02, **options)
        paths.append(path)
    plt.close(figure)
    return paths
