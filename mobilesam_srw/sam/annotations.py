"""Annotations validated against their image and brought into SA-1B's layout.

Each annotation of a sample becomes (when valid)::

    {"id": ..., "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"},
     "area": <mask pixels>, "bbox": [x, y, w, h], "point_coords": [[x, y]]  (when given), ...}

which is what ``eval --mode gt`` reads. Accepted segmentations are COCO's three forms: a
compressed RLE (``counts`` a string, SA-1B's form), an uncompressed RLE (``counts`` a list
of run lengths, COCO's crowd form) and polygons (lists of ``x, y`` coordinates). An
annotation is dropped, and counted by reason, when its types are wrong, its RLE's size is
not the image's or its runs do not cover the image exactly, a polygon or box leaves the
image (by more than :data:`TOLERANCE_PX`), a click lies outside the image, or its mask is
empty. pycocotools does not check RLE strings (a malformed one decodes to whatever memory
holds), so the runs are parsed and checked here before pycocotools sees them.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pycocotools import mask as mask_utils

TOLERANCE_PX = 1.0  # coordinates may pass the image border by this much (float rounding in tools)
_SA1B_SCORES = ("predicted_iou", "stability_score")
_COCO_INTEGERS = ("category_id",)
_MAX_RUN_GROUPS = 7  # 35 bits: every run below 2^32, with its sign


class InvalidAnnotation(ValueError):
    """An annotation left out; its message is the (short, countable) reason."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rle_runs(counts: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString`` format).

    Each run is a little-endian sequence of 6-bit groups stored as ``chr(48 + group)``: bit 5
    marks a following group, bit 4 of the last group is the sign, and runs from the fourth on
    are stored as differences to the run two places earlier. Malformed strings, negative runs
    and runs of 2^32 or more raise :class:`InvalidAnnotation`.
    """
    try:
        codes = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise InvalidAnnotation("bad rle counts") from None
    if codes.size == 0:
        return []
    more = (codes & 0x20) != 0
    if codes.min() < 0 or codes.max() >= 64 or more[-1]:
        raise InvalidAnnotation("bad rle counts")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RUN_GROUPS:
        raise InvalidAnnotation("bad rle counts")
    shifts = 5 * (np.arange(codes.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((codes & 0x1F) << shifts, starts)
    values -= np.where(codes[ends] & 0x10, np.int64(1) << (5 * lengths), 0)
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run i >= 3 is stored as run i - run (i - 2)
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0 or runs.max() >= 1 << 32:
        raise InvalidAnnotation("bad rle counts")
    return runs.tolist()


def _size(value: object) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_count(v) for v in value)):
        raise InvalidAnnotation("bad rle size")
    return value[0], value[1]


def _rle(segmentation: dict, image_size: tuple[int, int]) -> dict:
    """A checked RLE dict -> ``{"size", "counts": bytes}`` for pycocotools."""
    if _size(segmentation.get("size")) != image_size:
        raise InvalidAnnotation("rle size differs from the image")
    height, width = image_size
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        runs = rle_runs(counts)
        encoded = counts.encode("ascii")
    elif isinstance(counts, list) and all(_is_count(v) for v in counts):
        runs = counts
        encoded = None
    else:
        raise InvalidAnnotation("bad rle counts")
    if sum(runs) != height * width:
        raise InvalidAnnotation("rle runs do not cover the image")
    if encoded is None:
        return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"size": [height, width], "counts": encoded}


def _polygons(segmentation: list, image_size: tuple[int, int]) -> dict:
    height, width = image_size
    if not segmentation:
        raise InvalidAnnotation("no segmentation")
    for polygon in segmentation:
        if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
                and all(_is_number(v) for v in polygon)):
            raise InvalidAnnotation("bad polygon")
        xs, ys = polygon[0::2], polygon[1::2]
        if min(xs) < -TOLERANCE_PX or min(ys) < -TOLERANCE_PX or max(xs) > width + TOLERANCE_PX \
                or max(ys) > height + TOLERANCE_PX:
            raise InvalidAnnotation("polygon outside the image")
    return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in segmentation], height, width))


def _segmentation(value: object, image_size: tuple[int, int]) -> dict:
    """Any accepted segmentation -> pycocotools' compressed RLE (``counts`` bytes)."""
    if isinstance(value, dict):
        return _rle(value, image_size)
    if isinstance(value, list):
        return _polygons(value, image_size)
    raise InvalidAnnotation("no segmentation" if value is None else "bad segmentation")


def _bbox(value: object, image_size: tuple[int, int]) -> list[float]:
    """``[x, y, w, h]`` inside the image (to the tolerance), clipped to it."""
    height, width = image_size
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise InvalidAnnotation("bad bbox")
    x, y, w, h = (float(v) for v in value)
    if w <= 0 or h <= 0:
        raise InvalidAnnotation("empty bbox")
    if x < -TOLERANCE_PX or y < -TOLERANCE_PX or x + w > width + TOLERANCE_PX or y + h > height + TOLERANCE_PX:
        raise InvalidAnnotation("bbox outside the image")
    left, top = max(x, 0.0), max(y, 0.0)
    right, bottom = min(x + w, float(width)), min(y + h, float(height))
    if right <= left or bottom <= top:
        raise InvalidAnnotation("empty bbox")
    return [left, top, right - left, bottom - top]


def _points(value: object, image_size: tuple[int, int]) -> list[list[float]]:
    height, width = image_size
    if not (isinstance(value, list) and value and all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in value)):
        raise InvalidAnnotation("bad point_coords")
    if any(not (0 <= x <= width and 0 <= y <= height) for x, y in value):
        raise InvalidAnnotation("point_coords outside the image")
    return [[float(x), float(y)] for x, y in value]


def _mask_record(annotation: dict, image_size: tuple[int, int]) -> dict:
    """The shared part: ``segmentation`` (RLE as text), ``area`` > 0 and ``bbox``."""
    rle = _segmentation(annotation.get("segmentation"), image_size)
    area = int(mask_utils.area(rle))
    if area <= 0:
        raise InvalidAnnotation("empty mask")
    given_box = annotation.get("bbox")
    bbox = _bbox(given_box, image_size) if given_box is not None else [float(v) for v in mask_utils.toBbox(rle)]
    record = {"segmentation": {"size": list(image_size), "counts": rle["counts"].decode("ascii")},
              "area": area, "bbox": bbox}
    if "id" in annotation:
        if not (isinstance(annotation["id"], (int, str)) and not isinstance(annotation["id"], bool)):
            raise InvalidAnnotation("bad id")
        record["id"] = annotation["id"]
    return record


def _validated(annotations: object, image_size: tuple[int, int], convert) -> tuple[list[dict], dict[str, int]]:
    if not isinstance(annotations, list):
        raise InvalidAnnotation("annotations are not a list")
    kept, dropped = [], Counter()
    for annotation in annotations:
        try:
            if not isinstance(annotation, dict):
                raise InvalidAnnotation("not an object")
            kept.append(convert(annotation, image_size))
        except InvalidAnnotation as error:
            dropped[str(error)] += 1
    return kept, dict(sorted(dropped.items()))


def _from_sa1b(annotation: dict, image_size: tuple[int, int]) -> dict:
    record = _mask_record(annotation, image_size)
    if annotation.get("point_coords") is not None:
        record["point_coords"] = _points(annotation["point_coords"], image_size)
    for name in _SA1B_SCORES:
        if _is_number(annotation.get(name)):
            record[name] = float(annotation[name])
    crop_box = annotation.get("crop_box")
    if isinstance(crop_box, list) and len(crop_box) == 4 and all(_is_number(v) for v in crop_box):
        record["crop_box"] = [float(v) for v in crop_box]
    return record


def _from_coco(annotation: dict, image_size: tuple[int, int]) -> dict:
    crowd = annotation.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, bool):
        raise InvalidAnnotation("bad iscrowd")
    if crowd == 1:  # a region of many objects: not an instance to prompt for (COCO's evaluation ignores them too)
        raise InvalidAnnotation("crowd region")
    record = _mask_record(annotation, image_size)
    for name in _COCO_INTEGERS:
        if _is_count(annotation.get(name)):
            record[name] = annotation[name]
    return record


def sa1b_annotations(annotations: object, image_size: tuple[int, int]) -> tuple[list[dict], dict[str, int]]:
    """SA-1B's annotation list, validated against an ``(H, W)`` image: (kept, dropped count by reason)."""
    return _validated(annotations, image_size, _from_sa1b)


def coco_annotations(annotations: list, image_size: tuple[int, int]) -> tuple[list[dict], dict[str, int]]:
    """One image's COCO instance annotations, validated against an ``(H, W)`` image, in SA-1B's layout."""
    return _validated(annotations, image_size, _from_coco)
