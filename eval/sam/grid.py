"""Grid-point evaluation of one image: student masks against the teacher's, per prompt and quartile.

Prompts are ``build_point_grid(n)`` scaled to the original image, as
``SamAutomaticMaskGenerator`` places them; one positive click each, ``multimask_output=True``.
Masks are compared at the original size, as ``SamPredictor`` makes them: with a
:class:`~mobilesam_srw.eval.sam.tiles.MaskTiler` by the exact sparse upscale (only edge tiles in
pixels; the same IoUs), else (``tiler=None``, the reference) every mask upscaled in full. Either
way the teacher's masks of a batch of prompts are made once and serve every student.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from segment_anything.utils.amg import build_point_grid

from mobilesam_srw.eval.sam.decoder import logits_options
from mobilesam_srw.eval.sam.metrics import match_indices, paired_iou, prompt_quartiles
from mobilesam_srw.eval.sam.tiles import MaskTiler
from mobilesam_srw.eval.sam.tiles import paired_iou as tiled_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.shards import ShardSample

QUARTILES = 4


def grid_points(n: int, original_size: tuple[int, int]) -> np.ndarray:
    """``n x n`` grid in original-image ``(x, y)`` pixels, as ``SamAutomaticMaskGenerator``."""
    height, width = original_size
    return build_point_grid(n) * np.array([[width, height]])


def _full_batches(teacher: EmbeddingPredictor, students: list[tuple[str, EmbeddingPredictor]], points: np.ndarray,
                   match: str, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The reference: per batch of prompts, each student's ``[n, K]`` IoUs from SamPredictor's full-size masks."""
    streams = {run: predictor.point_batches(points, batch_size=batch_size) for run, predictor in students}
    for teacher_masks, teacher_scores in teacher.point_batches(points, batch_size=batch_size):
        yield {run: paired_iou(teacher_masks, teacher_scores, *next(stream), match).cpu()
               for run, stream in streams.items()}


def _tiled_batches(teacher: EmbeddingPredictor, students: list[tuple[str, EmbeddingPredictor]], points: np.ndarray,
                   match: str, batch_size: int, tiler: MaskTiler) -> Iterator[dict[str, torch.Tensor]]:
    """As :func:`_full_batches`, the masks by the exact sparse upscale of the logits of
    :func:`~mobilesam_srw.eval.sam.decoder.sparse_decoder`; the teacher's tiled once per batch."""
    sizes = teacher.input_size, teacher.original_size
    streams = {run: predictor.point_logits(points, batch_size=batch_size, **logits_options(predictor))
               for run, predictor in students}
    for teacher_logits, teacher_scores in teacher.point_logits(points, batch_size=batch_size,
                                                               **logits_options(teacher)):
        rows = torch.arange(len(teacher_logits), device=teacher_logits.device)
        channels = teacher_logits.shape[1]  # SamPredictor upscales the 3 masks of a prompt together
        teacher_masks = None
        ious = {}
        for run, stream in streams.items():
            student_logits, student_scores = next(stream)
            indices = match_indices(teacher_scores, student_scores, match)
            if indices is None:  # all: index by index, [n, M]
                if teacher_masks is None:
                    teacher_masks = tiler(teacher_logits, *sizes, channels)
                student_masks = tiler(student_logits, *sizes, channels)
                ious[run] = tiled_iou(teacher_masks, student_masks).view(student_scores.shape)
            else:  # the teacher's own best, the student's at the match's index: [n, 1]
                teacher_index, student_index = indices
                if teacher_masks is None:
                    teacher_masks = tiler(teacher_logits[rows, teacher_index], *sizes, channels)
                student_masks = tiler(student_logits[rows, student_index], *sizes, channels)
                ious[run] = tiled_iou(teacher_masks, student_masks)[:, None]
            ious[run] = ious[run].cpu()
        yield ious


def batch_ious(teacher: EmbeddingPredictor, students: list[tuple[str, EmbeddingPredictor]], points: np.ndarray,
               match: str, batch_size: int = 64, tiler: MaskTiler | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch of point prompts, each student's IoUs against the teacher, run -> ``[n, K]`` on the CPU
    (K = 3 for ``match="all"``, else 1).

    Args:
        teacher: the teacher's predictor, its embedding installed.
        students: (run, predictor) pairs.
        points: ``[N, 2]`` original-image ``(x, y)``.
        tiler: masks by the exact sparse upscale; None: SamPredictor's masks upscaled in full (the reference).
    """
    if tiler is None:
        return _full_batches(teacher, students, points, match, batch_size)
    return _tiled_batches(teacher, students, points, match, batch_size, tiler)


def evaluate_image(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    grids: list[int],
    match: str,
    points_per_batch: int = 64,
    tiler: MaskTiler | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """One row per student run and grid: IoU sum and count, overall and per avesim quartile (``q1_iou_sum`` ...).

    Args:
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`, the teacher first.
        tiler: masks by the exact sparse upscale; None: upscaled in full (the reference, same IoUs).
        progress: called with the number of prompts of each batch done.
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
        batches = batch_ious(teacher, students, points, match, points_per_batch, tiler)
        for start, ious_by_run in zip(range(0, len(points), points_per_batch), batches):
            batch_quartiles = quartiles[start : start + points_per_batch]
            for run, ious in ious_by_run.items():
                row = rows[run]
                row["iou_sum"] += ious.sum().item()
                row["count"] += ious.numel()
                for quartile in range(QUARTILES):
                    chosen = ious[batch_quartiles == quartile]
                    row[f"q{quartile + 1}_iou_sum"] += chosen.sum().item()
                    row[f"q{quartile + 1}_count"] += chosen.numel()
            if progress is not None:
                progress(len(batch_quartiles))
        results.extend(rows.values())
    return results
