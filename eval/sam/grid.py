"""Grid-point evaluation of one image: student masks against the teacher's, per prompt and quartile.

Prompts are ``build_point_grid(n)`` scaled to the original image, as
``SamAutomaticMaskGenerator`` places them; one positive click each, ``multimask_output=True``.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.amg import build_point_grid

from mobilesam_srw.eval.sam.metrics import paired_iou, prompt_quartiles
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.shards import ShardSample

QUARTILES = 4


def grid_points(n: int, original_size: tuple[int, int]) -> np.ndarray:
    """``n x n`` grid in original-image ``(x, y)`` pixels, as ``SamAutomaticMaskGenerator``."""
    height, width = original_size
    return build_point_grid(n) * np.array([[width, height]])


def evaluate_image(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    grids: list[int],
    match: str,
    points_per_batch: int = 64,
) -> list[dict]:
    """One row per student run and grid: IoU sum and count, overall and per avesim quartile (``q1_iou_sum`` ...).

    Args:
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`, the teacher first.
    """
    (_, teacher), *students = predictors.items()
    patch_size = teacher.frame_size // sample.avesim.shape[-1]  # the teacher's (record's) frame
    results = []
    for n in grids:
        points = grid_points(n, teacher.original_size)
        quartiles = torch.from_numpy(prompt_quartiles(teacher.input_points(points), sample.avesim,
                                                      teacher.input_extent, patch_size))
        rows = {run: {"key": sample.key, "run": run, "grid": n, "iou_sum": 0.0, "count": 0,
                      **{f"q{q + 1}_{part}": 0 for q in range(QUARTILES) for part in ("iou_sum", "count")}}
                for run, _ in students}
        streams = {run: predictor.point_batches(points, batch_size=points_per_batch) for run, predictor in students}
        start = 0
        for teacher_masks, teacher_scores in teacher.point_batches(points, batch_size=points_per_batch):
            batch_quartiles = quartiles[start : start + len(teacher_masks)]
            start += len(teacher_masks)
            for run, stream in streams.items():
                student_masks, student_scores = next(stream)
                ious = paired_iou(teacher_masks, teacher_scores, student_masks, student_scores, match).cpu()
                row = rows[run]
                row["iou_sum"] += ious.sum().item()
                row["count"] += ious.numel()
                for quartile in range(QUARTILES):
                    chosen = ious[batch_quartiles == quartile]
                    row[f"q{quartile + 1}_iou_sum"] += chosen.sum().item()
                    row[f"q{quartile + 1}_count"] += chosen.numel()
        results.extend(rows.values())
    return results
