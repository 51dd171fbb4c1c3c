"""``--mode teacher-box``: box prompts without annotations, from the teacher's own masks.

For images without annotations (a folder of photos or scans) and a teacher trained with boxes
(LiteMedSAM), the prompts are made from the teacher itself: an ``n x n`` grid of boxes tiling the
image prompts the teacher's prompt encoder and mask decoder on its stored embedding; the bounding
box of each mask it gives (masks under :data:`MIN_MASK_AREA` of the image left out) is a prompt,
duplicates removed by non-maximum suppression at IoU :data:`NMS_IOU` (torchvision's ``nms``,
ranked by the teacher's predicted IoU). Those boxes then prompt the teacher and every student
(single-mask output, as ``--mode gt --prompt box``), and each student's mask is scored against the
teacher's mask for the same box: how closely the student reproduces its teacher with the prompts
the teacher understands (Table 6's measure, with boxes). The boxes depend on the teacher alone, so
every student gets the same prompts.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import masks_to_boxes, nms

from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.shards import ShardSample

PROMPT = "teacher-box"
NMS_IOU = 0.7  # SamAutomaticMaskGenerator's box_nms_thresh
MIN_MASK_AREA = 0.001  # of the image: smaller masks give no box


def cell_boxes(height: int, width: int, grid: int) -> np.ndarray:
    """``[grid * grid, 4]`` XYXY boxes tiling an image of ``(height, width)``, row by row."""
    xs, ys = np.linspace(0, width, grid + 1), np.linspace(0, height, grid + 1)
    return np.array([[xs[i], ys[j], xs[i + 1], ys[j + 1]] for j in range(grid) for i in range(grid)], dtype=np.float64)


def teacher_boxes(teacher: EmbeddingPredictor, grid: int, batch_size: int = 64) -> np.ndarray:
    """``[N, 4]`` XYXY box prompts (original pixels) from the teacher's masks of a ``grid x grid`` box grid.

    Args:
        teacher: the teacher's predictor with the image's stored embedding installed.
        grid: boxes per side of the grid that prompts the teacher.
        batch_size: prompts per decoder call.
    """
    height, width = teacher.original_size
    masks, scores = [], []
    for batch_masks, batch_scores in teacher.box_batches(cell_boxes(height, width, grid), batch_size):
        masks.append(batch_masks[:, 0].cpu())
        scores.append(batch_scores[:, 0].float().cpu())
    masks, scores = torch.cat(masks), torch.cat(scores)
    kept = masks.flatten(1).sum(1) >= MIN_MASK_AREA * height * width
    if not kept.any():
        return np.zeros((0, 4))
    boxes = masks_to_boxes(masks[kept]).float()
    boxes[:, 2:] += 1  # pixel edges: a mask's last column x gives the box edge x + 1
    order = nms(boxes, scores[kept], NMS_IOU)
    return boxes[order].double().numpy()


def evaluate_image_teacher_boxes(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    grid: int,
    points_per_batch: int = 64,
) -> list[dict]:
    """One row per student run: the sum of IoUs with the teacher's masks over the image's teacher boxes.

    Args:
        sample: the image.
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`, the teacher first.
        grid: boxes per side of the grid that prompts the teacher (:func:`teacher_boxes`).
        points_per_batch: prompts per decoder call.
    """
    (_, teacher), *students = predictors.items()
    boxes = teacher_boxes(teacher, grid, points_per_batch)
    rows = {run: {"key": sample.key, "run": run, "prompt": PROMPT, "box_grid": grid, "teacher_iou_sum": 0.0,
                  "count": 0} for run, _ in students}
    for start in range(0, len(boxes), points_per_batch):
        chosen = boxes[start : start + points_per_batch]
        (reference, _), = teacher.box_batches(chosen, len(chosen))
        for run, predictor in students:
            (masks, _), = predictor.box_batches(chosen, len(chosen))
            rows[run]["teacher_iou_sum"] += mask_iou(masks[:, 0].cpu(), reference[:, 0].cpu()).sum().item()
            rows[run]["count"] += len(chosen)
    return list(rows.values())


def summarize_teacher_boxes(rows: list[dict], runs: list[str], grid: int) -> tuple[dict, str]:
    """Summary (mIoU % of each student against the teacher over the teacher's boxes) and its Markdown table."""
    miou = {}
    for run in runs:
        chosen = [row for row in rows if row["run"] == run]
        count = sum(row["count"] for row in chosen)
        miou[run] = 100 * sum(row["teacher_iou_sum"] for row in chosen) / count if count else None
    boxes = sum(row["count"] for row in rows if row["run"] == runs[0])  # every run has the same boxes
    images = len({row["key"] for row in rows})

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    table = (f"mIoU (%) of each student's masks against the teacher's for the same box, {boxes} boxes on {images} "
             f"images: the bounding boxes of the teacher's masks for a {grid}x{grid} grid of boxes (no annotations "
             "needed).\n\n| Model | mIoU vs teacher |\n|---|---|\n"
             + "\n".join(f"| {run} | {cell(value)} |" for run, value in miou.items()) + "\n")
    return {"miou_vs_teacher": miou, "boxes": boxes, "box_grid": grid, "prompt": PROMPT}, table
