"""Figure 3: the teacher's masks and each run's, side by side, with red boxes where the runs differ most.

Masks come from ``SamAutomaticMaskGenerator`` ("everything" mode, a ``grid x grid`` point grid)
on the stored teacher embedding and on each student's embedding. Each teacher mask is
matched to its best-overlapping mask of each run; the boxes mark the teacher masks whose
best IoU changes most between the first and the last run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.masks import iou_matrix
from mobilesam_srw.sam.predictor import automatic_masks
from mobilesam_srw.sam.prompt_models import TEACHER_RUN, PromptModels
from mobilesam_srw.sam.teacher import prompt_and_decoder
from mobilesam_srw.sam.transforms import PATCH_SIZE
from mobilesam_srw.shards import ShardSample
from mobilesam_srw.viz.figure_io import FULL_WIDTH_INCHES, PAPER_STYLE, plt, save_figure
from mobilesam_srw.viz.heatmap import choose_samples

MATCH_SIDE = 256  # masks are compared at this longest side when choosing boxes


def _resize_masks(records: list[dict], size: tuple[int, int]) -> np.ndarray:
    """``[N, h, w]`` bool masks of the records resized (nearest) to ``size`` (h, w)."""
    if not records:
        return np.zeros((0, *size), dtype=bool)
    return np.stack([cv2.resize(r["segmentation"].astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0
                     for r in records])


def paint_masks(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The image with each mask in its own colour, largest first so small masks stay visible."""
    colours = (np.array(plt.get_cmap("tab20").colors) * 255).astype(np.float32)
    painted = image.astype(np.float32)
    for index, mask in enumerate(masks):
        painted[mask] = 0.45 * painted[mask] + 0.55 * colours[index % len(colours)]
    return painted.astype(np.uint8)


def differing_boxes(teacher: list[dict], first: list[dict], last: list[dict], image_size: tuple[int, int],
                    top: int = 3) -> list[tuple[list[float], float]]:
    """Boxes (XYWH, original pixels) of the teacher masks whose best IoU changes most, with the change."""
    if not teacher:
        return []
    scale = MATCH_SIDE / max(image_size)
    small = (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))
    teacher_masks = torch.from_numpy(_resize_masks(teacher, small))

    def best(records: list[dict]) -> torch.Tensor:
        if not records:
            return torch.zeros(len(teacher))
        return iou_matrix(teacher_masks, torch.from_numpy(_resize_masks(records, small))).max(dim=1).values

    change = best(last) - best(first)
    order = torch.argsort(change.abs(), descending=True)[:top]
    return [(teacher[i]["bbox"], change[i].item()) for i in order.tolist() if change[i].abs() > 0]


def compare_figure(sample: ShardSample, panels: dict[str, list[dict]], boxes: list[tuple[list[float], float]]) -> plt.Figure:
    """One panel per mask set (teacher first), on the stored image, boxes in red."""
    image = sample.image
    scale = image.shape[0] / sample.meta["original_size"][0]
    with plt.rc_context(PAPER_STYLE):
        figure, axes = plt.subplots(1, len(panels), figsize=(FULL_WIDTH_INCHES, FULL_WIDTH_INCHES / len(panels)),
                                    gridspec_kw={"wspace": 0.04}, squeeze=False)
        for axis, (title, records) in zip(axes[0], panels.items()):
            axis.imshow(paint_masks(image, _resize_masks(records, image.shape[:2])))
            for (x, y, w, h), change in boxes:
                axis.add_patch(plt.Rectangle((x * scale, y * scale), w * scale, h * scale, fill=False,
                                             edgecolor="red", linewidth=1.0))
            axis.set_title(f"{title} ({len(records)} masks)")
            axis.set_xticks([])
            axis.set_yticks([])
    return figure


def draw_comparisons(shard_paths: Sequence[str], runs: Sequence[Path], out: Path, sam_checkpoint: Path, grid: int = 16,
                     keys: Iterable[str] | None = None, first: int = 4, device: str = "cpu",
                     **generator_options) -> list[Path]:
    """``out/compare_<key>.png`` and ``.pdf`` per chosen sample; returns the paths written."""
    samples = choose_samples(shard_paths, keys, first)
    input_size = samples[0].embedding.shape[-1] * PATCH_SIZE
    students = {}
    for run in runs:
        student, _ = load_student(run)
        students[Path(run).name if Path(run).is_dir() else Path(run).stem] = student
    models = PromptModels.build(prompt_and_decoder(sam_checkpoint), input_size, students, torch.device(device))
    paths = []
    for sample in samples:
        original_size = tuple(sample.meta["original_size"])
        panels = {label: automatic_masks(predictor, grid, **generator_options)
                  for label, predictor in models.install(sample).items()}
        run_labels = list(students)
        boxes = differing_boxes(panels[TEACHER_RUN], panels[run_labels[0]], panels[run_labels[-1]], original_size)
        paths += save_figure(compare_figure(sample, panels, boxes), Path(out) / f"compare_{sample.key}")
    return paths
