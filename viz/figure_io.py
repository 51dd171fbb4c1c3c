"""Figures for papers, every task's: the style (fonts that stay legible when scaled to a column) and saving
each figure as PNG (300 dpi) and vector PDF, each written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from mobilesam_srw.atomic import atomic_path  # noqa: E402

PAPER_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
               "ytick.labelsize": 7, "pdf.fonttype": 42}
FULL_WIDTH_INCHES = 7.0  # a two-column paper's text width (ACCV/LNCS: ~4.8 in; scale down freely, fonts stay >= 6 pt)


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
