"""``--mode gt``: prompts from SA-1B's annotations, IoU against its ground-truth masks.

The protocol EdgeSAM and NanoSAM report: ``--prompt box`` gives each annotation's box
(single-mask output); ``--prompt center`` gives one click at the annotation's
``point_coords`` (or, without one, the mask pixel nearest its centroid), three masks, and
the one with the highest predicted IoU counts. The teacher (from its stored embedding) is
scored as a run too, as the upper reference.
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from mobilesam_srw.sam.prompt_models import TEACHER_RUN
from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.shards import ShardSample

PROMPTS = ("box", "center")


def ground_truth(sample: ShardSample) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Masks ``[N, h, w]`` bool, boxes ``[N, 4]`` XYXY and clicks ``[N, 2]`` of the sample's annotations."""
    masks, boxes, clicks = [], [], []
    for annotation in sample.meta.get("annotations", []):
        rle = dict(annotation["segmentation"])
        rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        mask = mask_utils.decode(rle).astype(bool)
        if not mask.any():
            continue
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
    """The chosen mask of each prompt, batch by batch: ``[n, h, w]`` bool."""
    if prompt == "box":
        for masks, _ in predictor.box_batches(boxes, batch):
            yield masks[:, 0]
    else:
        for masks, scores in predictor.point_batches(clicks, multimask_output=True, batch_size=batch):
            yield masks[torch.arange(len(masks)), scores.argmax(dim=1)]


def evaluate_image_gt(
    sample: ShardSample,
    predictors: dict[str, EmbeddingPredictor],
    prompt: str,
    points_per_batch: int = 64,
) -> list[dict]:
    """One row per run (the teacher first): IoU sum and count over the image's annotations.

    Args:
        predictors: from :meth:`~mobilesam_srw.sam.prompt_models.PromptModels.install`.
    """
    gt_masks, boxes, clicks = ground_truth(sample)
    rows = []
    for run, predictor in predictors.items():
        ious = [mask_iou(masks.cpu(), gt_masks[start : start + len(masks)])
                for start, masks in zip(range(0, len(gt_masks), points_per_batch),
                                        _predicted(predictor, boxes, clicks, prompt, points_per_batch))]
        values = torch.cat(ious) if ious else torch.zeros(0)
        rows.append({"key": sample.key, "run": run, "prompt": prompt, "iou_sum": values.sum().item(),
                     "count": values.numel()})
    return rows


def summarize_gt(rows: list[dict], runs: list[str], prompt: str) -> tuple[dict, str]:
    """Summary (mIoU % per run) and its Markdown table."""
    miou = {}
    for run in [TEACHER_RUN, *runs]:
        chosen = [row for row in rows if row["run"] == run]
        count = sum(row["count"] for row in chosen)
        miou[run] = 100 * sum(row["iou_sum"] for row in chosen) / count if count else None
    masks = sum(row["count"] for row in rows if row["run"] == TEACHER_RUN)
    table = (f"mIoU (%) against SA-1B ground-truth masks, {prompt} prompts, {masks} masks.\n\n"
             "| Model | mIoU |\n|---|---|\n"
             + "\n".join(f"| {run} | {'n/a' if v is None else f'{v:.2f}'} |" for run, v in miou.items()) + "\n")
    return {"miou": miou, "masks": masks, "prompt": prompt}, table
