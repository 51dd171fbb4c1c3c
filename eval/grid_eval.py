"""Grid-point evaluation of one image: student masks against the teacher's, per prompt and quartile.

Prompts are ``build_point_grid(n)`` scaled to the original image, as
``SamAutomaticMaskGenerator`` places them; one positive click each, ``multimask_output=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.amg import build_point_grid

from mobilesam_srw.eval.metrics import paired_iou, prompt_quartiles
from mobilesam_srw.sam.predictor import EmbeddingPredictor, student_embedding
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.shards import ShardSample

QUARTILES = 4


@dataclass
class ImageResult:
    """IoU sums and counts of one run on one image at one grid, overall and per avesim quartile."""

    key: str
    run: str
    grid: int
    iou_sum: float
    count: int
    quartile_sums: list[float]
    quartile_counts: list[int]

    @property
    def miou(self) -> float:
        return self.iou_sum / max(self.count, 1)


def grid_points(n: int, original_size: tuple[int, int]) -> np.ndarray:
    """``n x n`` grid in original-image ``(x, y)`` pixels, as ``SamAutomaticMaskGenerator``."""
    height, width = original_size
    return build_point_grid(n) * np.array([[width, height]])


def evaluate_image(
    sample: ShardSample,
    teacher: EmbeddingPredictor,
    students: dict[str, tuple[SamStudent, EmbeddingPredictor]],
    grids: list[int],
    match: str,
    points_per_batch: int = 64,
) -> list[ImageResult]:
    """Results of every run at every grid for one image."""
    original_size = tuple(sample.meta["original_size"])
    input_size = tuple(sample.meta["input_size"])
    teacher.set_embedding(torch.from_numpy(sample.embedding), original_size, input_size)
    for student, predictor in students.values():
        predictor.set_embedding(student_embedding(student, sample, predictor.device), original_size, input_size)
    results = []
    for n in grids:
        points = grid_points(n, original_size)
        quartiles = torch.from_numpy(prompt_quartiles(teacher.transform.apply_coords(points, original_size),
                                                      sample.avesim, input_size))
        runs = {run: ImageResult(sample.key, run, n, 0.0, 0, [0.0] * QUARTILES, [0] * QUARTILES) for run in students}
        streams = {run: predictor.point_batches(points, batch_size=points_per_batch)
                   for run, (_, predictor) in students.items()}
        start = 0
        for teacher_masks, teacher_scores in teacher.point_batches(points, batch_size=points_per_batch):
            batch_quartiles = quartiles[start : start + len(teacher_masks)]
            start += len(teacher_masks)
            for run, stream in streams.items():
                student_masks, student_scores = next(stream)
                ious = paired_iou(teacher_masks, teacher_scores, student_masks, student_scores, match).cpu()
                result = runs[run]
                result.iou_sum += ious.sum().item()
                result.count += ious.numel()
                for quartile in range(QUARTILES):
                    chosen = ious[batch_quartiles == quartile]
                    result.quartile_sums[quartile] += chosen.sum().item()
                    result.quartile_counts[quartile] += chosen.numel()
        results.extend(runs.values())
    return results
