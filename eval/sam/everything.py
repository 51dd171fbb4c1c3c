"""``--mode everything``: SamAutomaticMaskGenerator on the teacher's and each student's embedding.

Teacher and student masks are matched one to one by IoU (Hungarian). Reported: the mIoU of
matched pairs, and the recall of teacher masks (matched at IoU >= 0.5) by size — Figure 3's
claim that SRW "recalls more small targets", measured. Sizes follow COCO's thresholds at the
teacher's working resolution: a mask's area is scaled to the teacher's input frame (1024 px for
SAM, 256 px for LiteMedSAM, whose box-only training makes this mode a poor fit anyway), then
small < 32^2 <= medium < 96^2 <= large.

The teacher's automatic masks are made once per image for every student. Pairs of masks whose
bounding boxes do not meet have IoU 0, so :func:`box_iou_matrix` counts intersections only inside
the boxes' overlaps (the same IoUs as ``iou_matrix``; ``pruned=False`` keeps that as the
reference). SamAutomaticMaskGenerator itself upscales every mask in full, as it must for its
stability filter.
"""

from __future__ import annotations

from typing import Callable

import torch

from mobilesam_srw.sam.masks import iou_from_counts, iou_matrix, match_one_to_one
from mobilesam_srw.sam.predictor import EmbeddingPredictor, automatic_masks
from mobilesam_srw.shards import ShardSample

SIZES = ("small", "medium", "large")
RECALL_IOU = 0.5


def size_bucket(area: float, original_size: tuple[int, int], input_longest: int) -> str:
    scaled = area * (input_longest / max(original_size)) ** 2
    return "small" if scaled < 32**2 else "medium" if scaled < 96**2 else "large"


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``[N, h, w]`` bool -> ``[N, 4]`` (y0, y1, x0, x1) half-open bounds (empty masks: an empty box)."""
    rows, cols = masks.any(2), masks.any(1)

    def bounds(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = lines.shape[1]
        first = torch.where(lines.any(1), lines.int().argmax(1), size)
        last = size - lines.flip(1).int().argmax(1)
        return first, torch.maximum(last, first)

    return torch.stack([*bounds(rows), *bounds(cols)], dim=1)


def box_iou_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``iou_matrix`` of ``[A, h, w]`` and ``[B, h, w]`` bool masks, counting each pair's intersection only
    inside the overlap of their bounding boxes (elsewhere it is 0); the same values."""
    if len(first) == 0 or len(second) == 0:
        return torch.zeros(len(first), len(second))
    first_boxes, second_boxes = mask_boxes(first), mask_boxes(second)
    top = torch.maximum(first_boxes[:, None, 0], second_boxes[None, :, 0])
    bottom = torch.minimum(first_boxes[:, None, 1], second_boxes[None, :, 1])
    left = torch.maximum(first_boxes[:, None, 2], second_boxes[None, :, 2])
    right = torch.minimum(first_boxes[:, None, 3], second_boxes[None, :, 3])
    intersection = torch.zeros(len(first), len(second), dtype=torch.int32)
    for i, j in ((top < bottom) & (left < right)).nonzero().tolist():
        y0, y1, x0, x1 = top[i, j], bottom[i, j], left[i, j], right[i, j]
        intersection[i, j] = (first[i, y0:y1, x0:x1] & second[j, y0:y1, x0:x1]).sum(dtype=torch.int32)
    areas = first.flatten(1).sum(1, dtype=torch.int32), second.flatten(1).sum(1, dtype=torch.int32)
    return iou_from_counts(intersection, areas[0][:, None], areas[1][None, :])


def evaluate_image_everything(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    grid: int,
    pruned: bool = True,
    progress: Callable[[int], None] | None = None,
    **generator_options,
) -> list[dict]:
    """One row per student run: matched IoU sum and count, teacher masks and recalled masks per size.

    Args:
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`, the teacher first.
        pruned: IoUs by :func:`box_iou_matrix`; False: ``iou_matrix`` over every pixel (the reference).
        progress: called with the number of prompts (``grid**2``) when the image is done.
    """
    (_, teacher), *students = predictors.items()
    original_size, input_longest = teacher.original_size, max(teacher.input_extent)
    reference = automatic_masks(teacher, grid, **generator_options)
    reference_masks = torch.stack([torch.from_numpy(r["segmentation"]) for r in reference]) if reference else None
    buckets = [size_bucket(r["area"], original_size, input_longest) for r in reference]
    rows = []
    for run, predictor in students:
        records = automatic_masks(predictor, grid, **generator_options)
        row = {"key": sample.key, "run": run, "grid": grid, "teacher_masks": len(reference),
               "student_masks": len(records), "matched_iou_sum": 0.0, "matched": 0}
        row.update({f"{size}_teacher": buckets.count(size) for size in SIZES})
        row.update({f"{size}_recalled": 0 for size in SIZES})
        if reference and records:
            pairing = box_iou_matrix if pruned else iou_matrix
            ious = pairing(reference_masks, torch.stack([torch.from_numpy(r["segmentation"]) for r in records]))
            rows_matched, cols_matched = match_one_to_one(ious)
            for teacher_index, student_index in zip(rows_matched, cols_matched):
                iou = ious[teacher_index, student_index].item()
                row["matched_iou_sum"] += iou
                row["matched"] += 1
                if iou >= RECALL_IOU:
                    row[f"{buckets[teacher_index]}_recalled"] += 1
        rows.append(row)
    if progress is not None:
        progress(grid * grid)
    return rows


def summarize_everything(rows: list[dict], runs: list[str], grid: int) -> tuple[dict, str]:
    """Summary (matched mIoU and recall by size, %) and its Markdown table."""
    summary = {"grid": grid, "results": {}}
    for run in runs:
        chosen = [row for row in rows if row["run"] == run]

        def share(numerator: str, denominator: str) -> float | None:
            total = sum(row[denominator] for row in chosen)
            return 100 * sum(row[numerator] for row in chosen) / total if total else None

        recall = {size: share(f"{size}_recalled", f"{size}_teacher") for size in SIZES}
        recalled_all = sum(row[f"{size}_recalled"] for row in chosen for size in SIZES)
        teacher_all = sum(row["teacher_masks"] for row in chosen)
        recall["all"] = 100 * recalled_all / teacher_all if teacher_all else None
        summary["results"][run] = {"matched_miou": share("matched_iou_sum", "matched"), "recall": recall,
                                "teacher_masks": teacher_all, "student_masks": sum(r["student_masks"] for r in chosen)}

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    table = (f"Everything mode ({grid}x{grid} points): mIoU (%) of one-to-one matched masks, and recall (%) of "
             f"teacher masks at IoU >= {RECALL_IOU} by size.\n\n"
             "| Method | matched mIoU | recall small | recall medium | recall large | recall all | teacher / student masks |\n"
             "|---|---|---|---|---|---|---|\n"
             + "\n".join(f"| {run} | {cell(v['matched_miou'])} | "
                         + " | ".join(cell(v["recall"][k]) for k in (*SIZES, "all"))
                         + f" | {v['teacher_masks']} / {v['student_masks']} |"
                         for run, v in summary["results"].items()) + "\n")
    return summary, table
