"""``--mode gt``: prompts from SA-1B's annotations, IoU against its ground-truth masks and the teacher's.

The protocol EdgeSAM and NanoSAM report: ``--prompt box`` gives each annotation's box
(single-mask output); ``--prompt center`` gives one click at the annotation's
``point_coords`` (or, without one, the mask pixel nearest its centroid), three masks, and
the one with the highest predicted IoU counts. The teacher (from its stored embedding) is
scored as a run too, as the upper reference; each student is also scored against the
teacher's mask for the same prompt (the distillation's own measure, as Table 6). Box prompts
are the natural mode for LiteMedSAM, which was trained with boxes only. Masks are compared at the
original size, by the exact sparse upscale (:mod:`~mobilesam_srw.eval.sam.tiles`) or, as the
reference, upscaled in full; the IoUs are the same.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils

from mobilesam_srw.eval.sam.decoder import logits_options
from mobilesam_srw.eval.sam.tiles import MaskTiler, TiledMasks
from mobilesam_srw.eval.sam.tiles import paired_iou as tiled_iou
from mobilesam_srw.sam.annotations import InvalidAnnotation, sa1b_annotations
from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.prompt_models import TEACHER_RUN
from mobilesam_srw.shards import ShardSample

PROMPTS = ("box", "center")


def checked_annotations(sample: ShardSample) -> tuple[list[dict], int]:
    """The sample's annotations validated again against its original size (a shard is not trusted
    to come from our precompute), and how many were dropped."""
    try:
        kept, dropped = sa1b_annotations(sample.meta.get("annotations", []), tuple(sample.meta["original_size"]))
    except InvalidAnnotation:  # not a list at all
        return [], 1
    return kept, sum(dropped.values())


def ground_truth(sample: ShardSample, annotations: list[dict] | None = None
                 ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Masks ``[N, h, w]`` bool, boxes ``[N, 4]`` XYXY and clicks ``[N, 2]`` of the sample's annotations.

    Args:
        sample: the shard sample.
        annotations: its :func:`checked_annotations` (computed when not given).
    """
    if annotations is None:
        annotations, _ = checked_annotations(sample)
    masks, boxes, clicks = [], [], []
    for annotation in annotations:
        rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode("ascii")}
        mask = mask_utils.decode(rle).astype(bool)
        x, y, w, h = annotation["bbox"]
        if annotation.get("point_coords"):
            click = annotation["point_coords"][0]
        else:
            ys, xs = np.nonzero(mask)
            nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            click = [xs[nearest], ys[nearest]]
        masks.append(torch.from_numpy(mask))
        boxes.append([x, y, x + w, y + h])
        clicks.append(click)
    if not masks:
        return torch.zeros(0, 1, 1, dtype=torch.bool), np.zeros((0, 4)), np.zeros((0, 2))
    return torch.stack(masks), np.array(boxes, dtype=np.float64), np.array(clicks, dtype=np.float64)


def _predicted(predictor: EmbeddingPredictor, boxes: np.ndarray, clicks: np.ndarray, prompt: str, batch: int):
    """The chosen mask of each prompt, batch by batch: ``[n, h, w]`` bool at the original size."""
    if prompt == "box":
        for masks, _ in predictor.box_batches(boxes, batch):
            yield masks[:, 0]
    else:
        for masks, scores in predictor.point_batches(clicks, multimask_output=True, batch_size=batch):
            yield masks[torch.arange(len(masks)), scores.argmax(dim=1)]


def _predicted_tiled(predictor: EmbeddingPredictor, boxes: np.ndarray, clicks: np.ndarray, prompt: str, batch: int,
                     tiler: MaskTiler):
    """As :func:`_predicted`, by the exact sparse upscale: :class:`TiledMasks` of ``n`` masks per batch."""
    sizes = predictor.input_size, predictor.original_size
    options = logits_options(predictor)
    if prompt == "box":
        for logits, _ in predictor.box_logits(boxes, batch, **options):
            yield tiler(logits[:, 0], *sizes, channels=1)
    else:
        for logits, scores in predictor.point_logits(clicks, multimask_output=True, batch_size=batch, **options):
            chosen = logits[torch.arange(len(logits)), scores.argmax(dim=1)]
            yield tiler(chosen, *sizes, channels=logits.shape[1])


def evaluate_image_gt(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    prompt: str,
    points_per_batch: int = 64,
    tiler: MaskTiler | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """One row per run (the teacher first): IoU sum and count over the image's annotations against the
    ground truth, and for students (``teacher_iou_sum``) against the teacher's mask of the same prompt.

    Args:
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`, the teacher first.
        tiler: masks by the exact sparse upscale; None: upscaled in full (the reference, same IoUs).
        progress: called with the number of prompts of each batch done.
    """
    annotations, dropped = checked_annotations(sample)
    gt_masks, boxes, clicks = ground_truth(sample, annotations)
    if tiler is None:
        streams = {run: _predicted(predictor, boxes, clicks, prompt, points_per_batch)
                   for run, predictor in predictors.items()}
        iou = mask_iou
    else:
        streams = {run: _predicted_tiled(predictor, boxes, clicks, prompt, points_per_batch, tiler)
                   for run, predictor in predictors.items()}
        iou = tiled_iou
    rows = {run: {"key": sample.key, "run": run, "prompt": prompt, "iou_sum": 0.0, "count": 0,
                  **({"annotations_dropped": dropped} if run == TEACHER_RUN else {"teacher_iou_sum": 0.0})}
            for run in predictors}
    device = next(iter(predictors.values())).device
    for start in range(0, len(gt_masks), points_per_batch):
        truth = gt_masks[start : start + points_per_batch]
        if tiler is not None:
            truth = TiledMasks.from_dense(truth.to(device), tiler.tile)
        teacher_masks = None
        for run, stream in streams.items():
            masks = next(stream)
            if tiler is None:
                masks = masks.cpu()
            row = rows[run]
            row["iou_sum"] += iou(masks, truth).sum().item()
            row["count"] += len(masks)
            if teacher_masks is None:
                teacher_masks = masks
            else:
                row["teacher_iou_sum"] += iou(masks, teacher_masks).sum().item()
        if progress is not None:
            progress(len(truth))
    return list(rows.values())


def summarize_gt(rows: list[dict], runs: list[str], prompt: str) -> tuple[dict, str]:
    """Summary (mIoU % per run against the ground truth, and per student against the teacher) and its
    Markdown table."""
    miou, versus_teacher = {}, {}
    for run in [TEACHER_RUN, *runs]:
        chosen = [row for row in rows if row["run"] == run]
        count = sum(row["count"] for row in chosen)
        miou[run] = 100 * sum(row["iou_sum"] for row in chosen) / count if count else None
        if run != TEACHER_RUN:
            versus_teacher[run] = 100 * sum(row["teacher_iou_sum"] for row in chosen) / count if count else None
    masks = sum(row["count"] for row in rows if row["run"] == TEACHER_RUN)
    dropped = sum(row["annotations_dropped"] for row in rows if row["run"] == TEACHER_RUN)

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    table = (f"mIoU (%) of {prompt} prompts from the annotations, {masks} masks: against the ground-truth masks, "
             "and against the teacher's mask for the same prompt."
             + (f" {dropped} invalid annotations left out." if dropped else "") + "\n\n"
             "| Model | mIoU vs ground truth | mIoU vs teacher |\n|---|---|---|\n"
             + "\n".join(f"| {run} | {cell(value)} | {'-' if run == TEACHER_RUN else cell(versus_teacher[run])} |"
                         for run, value in miou.items()) + "\n")
    return {"miou": miou, "miou_vs_teacher": versus_teacher, "masks": masks, "annotations_dropped": dropped,
            "prompt": prompt}, table
