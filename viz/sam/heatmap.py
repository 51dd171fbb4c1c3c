"""Figure 4: where SRW puts the weight. The image on the teacher's padded square (its input size,
from the shards' teacher record), the patch-weight map ``srw_weights(avesim, tau)`` (red high,
blue low, with a colourbar), and the two overlaid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.engine.config import EngineConfig
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.options import option
from mobilesam_srw.sam.teachers.shards import shard_teacher
from mobilesam_srw.shards import ShardSample, iterate_shards
from mobilesam_srw.srw import MIN_TAU, NORMALIZERS, srw_weights
from mobilesam_srw.viz.figure_io import FULL_WIDTH_INCHES, PAPER_STYLE, plt, save_figure
from mobilesam_srw.viz.sam.config import FigureConfig

PADDING_GREY = 200


@dataclass(kw_only=True)
class HeatmapConfig(FigureConfig):
    """``srw-sam heatmap``: Figure 4 of the chosen samples; tau and normalizer as in training."""

    tau: float = option(EngineConfig.tau, minimum=MIN_TAU, help="SRW temperature of Eq. 5")
    normalizer: str = option(EngineConfig.normalizer, choices=NORMALIZERS[:3],
                             help="weights from avesim: softmax (Eq. 5), reverse (Table 7), sum (Eq. 7)")


def check_finite(sample: ShardSample) -> None:
    """A one-line :class:`SrwError` when the sample's avesim holds NaN or inf."""
    if not np.isfinite(sample.avesim).all():
        raise SrwError(f"sample {sample.key}: its avesim (or the teacher embedding it comes from) has NaN or inf values")


def weight_map(sample: ShardSample, tau: float, normalizer: str = "softmax") -> np.ndarray:
    """``[H, W]`` SRW weights of the sample's patches (Eq. 5 over all of them, as in training)."""
    return srw_weights(torch.from_numpy(sample.avesim).flatten(), tau, normalizer).view(sample.avesim.shape).numpy()


def padded_image(sample: ShardSample, size: int) -> np.ndarray:
    """The stored image on the teacher's ``size x size`` canvas; the padding light grey."""
    canvas = np.full((size, size, 3), PADDING_GREY, dtype=np.uint8)
    height, width = sample.image.shape[:2]
    canvas[:height, :width] = sample.image
    return canvas


def heatmap_figure(sample: ShardSample, tau: float, normalizer: str = "softmax", input_size: int | None = None
                   ) -> plt.Figure:
    """Three panels: padded image, weight map with colourbar, overlay.

    Args:
        sample: a shard sample (its avesim gives the weights).
        tau: SRW temperature.
        normalizer: ``softmax`` (Eq. 5), ``reverse`` or ``sum``.
        input_size: the teacher's input size (its record's); default the stored image's longest side,
            which the shard format makes the same.
    """
    check_finite(sample)
    weights = weight_map(sample, tau, normalizer)
    size = input_size or max(sample.image.shape[:2])
    height, width = sample.image.shape[:2]
    with plt.rc_context(PAPER_STYLE):
        figure, axes = plt.subplots(1, 3, figsize=(FULL_WIDTH_INCHES, FULL_WIDTH_INCHES / 3 * 0.95),
                                    gridspec_kw={"wspace": 0.08})
        extent = (0, size, size, 0)
        axes[0].imshow(padded_image(sample, size), extent=extent)
        axes[0].add_patch(plt.Rectangle((0, 0), width, height, fill=False, edgecolor="white", linestyle="--", lw=0.8))
        axes[0].set_title(f"{sample.key} (padding in grey)")
        shown = axes[1].imshow(weights, cmap="jet", extent=extent, interpolation="nearest")
        axes[1].set_title(f"SRW weights, {normalizer}, $\\tau$={tau:g}")
        axes[2].imshow(padded_image(sample, size), extent=extent)
        axes[2].imshow(weights, cmap="jet", extent=extent, interpolation="nearest", alpha=0.5)
        axes[2].set_title("overlay")
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
        bar = figure.colorbar(shown, ax=axes, fraction=0.025, pad=0.01)
        bar.formatter.set_powerlimits((-2, 2))
        bar.set_label("patch weight (uniform = 1/HW)")
    return figure


def choose_samples(shard_paths: Sequence[str], keys: Iterable[str] | None, first: int) -> list[ShardSample]:
    """The samples named by ``keys`` (all must exist), else the first ``first``."""
    wanted = list(keys or [])
    chosen = []
    for sample in iterate_shards(shard_paths):
        if (wanted and sample.key in wanted) or (not wanted and len(chosen) < first):
            chosen.append(sample)
        if (wanted and len(chosen) == len(wanted)) or (not wanted and len(chosen) == first):
            break
    if missing := sorted(set(wanted) - {s.key for s in chosen}):
        raise SrwError(f"--keys: not in the shards: {', '.join(missing)}")
    if not chosen:
        raise SrwError("the shards hold no samples")
    return chosen


def draw_heatmaps(config: HeatmapConfig) -> list[Path]:
    """``<out>/heatmap_<key>.png`` and ``.pdf`` per chosen sample; returns the paths written.

    Options are checked before any work; the figure folder is locked while it is written.
    """
    config.check()
    paths = shards.resolve_shards(config.shards)
    input_size = shard_teacher(paths).spec.input_size
    samples = choose_samples(paths, config.keys, config.first)
    for sample in samples:
        check_finite(sample)
    with output_lock(config.out):
        written = []
        for sample in tqdm(samples, desc="heatmap", unit="img", disable=not config.progress):
            figure = heatmap_figure(sample, config.tau, config.normalizer, input_size)
            written += save_figure(figure, Path(config.out) / f"heatmap_{sample.key}")
        return written
