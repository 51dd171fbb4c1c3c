"""Figure 4: where SRW puts the weight. The image on the teacher's padded square (its input size,
from the shards' teacher record), the patch-weight map ``srw_weights(avesim, tau)`` in a perceptually
uniform colour map (viridis: yellow high, dark blue low, with a colourbar), and the two overlaid.

The heatmaps of one ``srw-sam heatmap`` call share one colour range (the lowest and highest weight
over all the images drawn), so their colours can be compared; the colourbar says so."""

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
COLOUR_MAP = "viridis"  # perceptually uniform, readable in greyscale and by colour-blind readers


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


def heatmap_figure(sample: ShardSample, tau: float, normalizer: str = "softmax", input_size: int | None = None,
                   pads: bool = True, colour_range: tuple[float, float] | None = None) -> plt.Figure:
    """Three panels: padded image, weight map with colourbar, overlay; the sample's key above them.

    Args:
        sample: a shard sample (its avesim gives the weights).
        tau: SRW temperature.
        normalizer: ``softmax`` (Eq. 5), ``reverse`` or ``sum``.
        input_size: the teacher's input size (its record's); default the stored image's longest side,
            which the shard format makes the same.
        pads: whether the teacher pads the image (SAM); false for a teacher whose input is the whole image
            resized to a square (SAM 2), whose patch grid then spans the image, drawn at its own aspect.
        colour_range: ``(low, high)`` weights of the colour map, shared by heatmaps meant to be compared
            (:func:`shared_colour_range`); default this image's own lowest and highest weight.
    """
    check_finite(sample)
    weights = weight_map(sample, tau, normalizer)
    size = input_size or max(sample.image.shape[:2])
    height, width = sample.image.shape[:2]
    low, high = colour_range or (float(weights.min()), float(weights.max()))
    shown_image = padded_image(sample, size) if pads else sample.image
    with plt.rc_context(PAPER_STYLE):
        figure, axes = plt.subplots(1, 3, figsize=(FULL_WIDTH_INCHES, FULL_WIDTH_INCHES / 3 * 0.95),
                                    gridspec_kw={"wspace": 0.08})
        extent = (0, size, size, 0) if pads else (0, width, height, 0)
        padded = pads and (height, width) != (size, size)
        axes[0].imshow(shown_image, extent=extent)
        if padded:
            axes[0].add_patch(plt.Rectangle((0, 0), width, height, fill=False, edgecolor="white", linestyle="--",
                                            lw=0.8))
        axes[0].set_title("image, padding in grey" if padded else "image" if pads else "image (patches span it)")
        shown = axes[1].imshow(weights, cmap=COLOUR_MAP, extent=extent, interpolation="nearest", vmin=low, vmax=high)
        axes[1].set_title(f"SRW weights, {normalizer}, $\\tau$={tau:g}")
        axes[2].imshow(shown_image, extent=extent)
        axes[2].imshow(weights, cmap=COLOUR_MAP, extent=extent, interpolation="nearest", alpha=0.5, vmin=low,
                       vmax=high)
        axes[2].set_title("overlay")
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
        note = ("colours on the range shared by the heatmaps drawn together" if colour_range
                else "colours on its own range")
        figure.suptitle(f"{sample.key}: {note}", fontsize=PAPER_STYLE["axes.titlesize"], y=1.0, va="bottom")
        bar = figure.colorbar(shown, ax=axes, fraction=0.025, pad=0.01)
        bar.formatter.set_powerlimits((-2, 2))
        bar.set_label("patch weight (uniform: 1/HW)")
    return figure


def shared_colour_range(samples: Sequence[ShardSample], tau: float, normalizer: str = "softmax"
                        ) -> tuple[float, float]:
    """The lowest and highest patch weight over ``samples``: one colour range for heatmaps to compare."""
    maps = [weight_map(sample, tau, normalizer) for sample in samples]
    return min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)


def caption(tau: float, normalizer: str = "softmax", shared: bool = True) -> str:
    """The sentence a report puts under a heatmap figure: what is drawn."""
    weights = {"softmax": "softmax(-avesim / tau) over the image's patches (Eq. 5)",
               "reverse": "the reversed normalizer of Table 7", "sum": "avesim normalised to sum 1 (Eq. 7)"}[normalizer]
    return (f"Left: the stored image on the teacher's padded input square (padding in grey, the image's edge dashed, "
            f"when there is padding). Middle: each patch's SRW weight, {weights}, tau {tau:g}, in viridis (yellow "
            f"high, dark blue low; a uniform weight is 1/HW). Right: the two overlaid. "
            + ("All heatmaps drawn together share one colour range." if shared else "The colours span this image's "
               "own range."))


def choose_samples(shard_paths: Sequence[str], keys: Iterable[str] | None, first: int, maps: tuple[str, ...] = ()
                   ) -> list[ShardSample]:
    """The samples named by ``keys`` (all must exist), else the first ``first`` (with the target ``maps``)."""
    wanted = list(keys or [])
    chosen = []
    for sample in iterate_shards(shard_paths, maps=maps):
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
    """``<out>/heatmap_<key>.png`` and ``.pdf`` per chosen sample, in one shared colour range; returns the paths
    written.

    Options are checked before any work; the figure folder is locked while it is written.
    """
    config.check()
    paths = shards.resolve_shards(config.shards)
    teacher = shard_teacher(paths)
    input_size, pads = teacher.spec.input_size, teacher.preprocessing.pads
    samples = choose_samples(paths, config.keys, config.first)
    for sample in samples:
        check_finite(sample)
    colour_range = shared_colour_range(samples, config.tau, config.normalizer) if len(samples) > 1 else None
    with output_lock(config.out):
        written = []
        for sample in tqdm(samples, desc="heatmap", unit="img", disable=not config.progress):
            figure = heatmap_figure(sample, config.tau, config.normalizer, input_size, pads, colour_range)
            written += save_figure(figure, Path(config.out) / f"heatmap_{sample.key}")
        return written
