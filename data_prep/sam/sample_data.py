"""A small data set from scikit-image's bundled photos, for demos and tests, in three layouts.

Each image is a real photo (astronaut, coffee, chelsea, rocket, ...), cropped and scaled
differently per sample; its masks are the largest Felzenszwalb segments. Layouts: SA-1B tars
(masks as COCO RLE in SA-1B's annotation schema), a plain folder of images in nested folders
and mixed formats (no annotations), and a COCO instances file with an image folder (masks as
polygons and as RLE). The same seed gives the same images in every layout. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from mobilesam_srw.atomic import atomic_path
from mobilesam_srw.data_prep.sample_photos import add_member, sample_images

SAMPLE_FORMATS = ("sa1b", "folder", "coco")
FOLDER_EXTENSIONS = ("jpg", "png", "webp", "tif", "bmp")  # the plain folder cycles through these
COCO_FILE = "instances.json"
COCO_IMAGES = "images"


def sa1b_annotations(image: np.ndarray, max_masks: int = 5) -> list[dict]:
    """SA-1B-style annotations: the largest segments of the image as COCO-RLE masks."""
    from pycocotools import mask as mask_utils
    from skimage.segmentation import felzenszwalb

    segments = felzenszwalb(image, scale=200, sigma=0.8, min_size=max(20, image.size // 3000))
    labels, areas = np.unique(segments, return_counts=True)
    annotations = []
    for rank, label in enumerate(labels[np.argsort(-areas)][:max_masks]):
        binary = np.asfortranarray(segments == label, dtype=np.uint8)
        rle = mask_utils.encode(binary)
        ys, xs = np.nonzero(binary)
        nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)  # a point inside the mask
        annotations.append(
            {
                "id": rank,
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "predicted_iou": 1.0,
                "stability_score": 1.0,
                "crop_box": [0.0, 0.0, float(image.shape[1]), float(image.shape[0])],
                "point_coords": [[float(xs[nearest]), float(ys[nearest])]],
            }
        )
    return annotations


def sa1b_sample(image: np.ndarray, image_id: int) -> tuple[bytes, bytes]:
    """The ``sa_<id>.jpg`` and ``sa_<id>.json`` bytes of one image, as SA-1B ships them."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    record = {
        "image": {"image_id": image_id, "width": image.shape[1], "height": image.shape[0],
                  "file_name": f"sa_{image_id}.jpg"},
        "annotations": sa1b_annotations(image),
    }
    return buffer.getvalue(), json.dumps(record).encode()


def write_sample_sa1b(
    out: Path, num_images: int = 8, images_per_tar: int = 4, seed: int = 0, max_side: int = 512, first_tar: int = 0
) -> list[Path]:
    """Write ``sa_<NNNNNN>.tar`` files of ``num_images`` photo variants; returns their paths.

    Args:
        out: folder to write into (created).
        num_images: images in all.
        images_per_tar: images per tar (SA-1B has about 11k).
        seed: chooses crops; the same seed writes the same data.
        max_side: longest image side in pixels (SA-1B's are about 1500 x 2250).
        first_tar: number of the first tar, so two calls can make disjoint splits.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = sample_images(num_images, seed, max_side)
    paths = []
    for tar_offset, start in enumerate(range(0, num_images, images_per_tar)):
        path = out / f"sa_{first_tar + tar_offset:06d}.tar"
        with atomic_path(path) as temporary, tarfile.open(temporary, "w") as archive:
            for index in range(start, min(start + images_per_tar, num_images)):
                image_id = (first_tar + tar_offset) * 100_000 + index + 1
                _, image = next(images)
                jpeg, record = sa1b_sample(image, image_id)
                add_member(archive, f"sa_{image_id}.jpg", jpeg)
                add_member(archive, f"sa_{image_id}.json", record)
        paths.append(path)
    return paths


def _save_image(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format=Image.registered_extensions()[path.suffix])


def write_sample_folder(out: Path, num_images: int = 8, seed: int = 0, max_side: int = 512) -> list[Path]:
    """Write a plain image folder, ``<photo>/<photo>_<NNN>.<ext>`` in JPEG, PNG, WebP, TIFF and BMP
    in turn (no annotations: distillation needs none); returns the image paths."""
    out = Path(out)
    paths = []
    for index, (name, image) in enumerate(sample_images(num_images, seed, max_side)):
        path = out / name / f"{name}_{index:03d}.{FOLDER_EXTENSIONS[index % len(FOLDER_EXTENSIONS)]}"
        _save_image(image, path)
        paths.append(path)
    return paths


def coco_polygons(mask: np.ndarray) -> list[list[float]]:
    """The outer contours of a binary mask as COCO polygons (``[x0, y0, x1, y1, ...]``, 3+ points)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[float(v) for v in contour.reshape(-1)] for contour in contours if len(contour) >= 3]


def coco_record(images: list[tuple[str, np.ndarray]]) -> dict:
    """A COCO instances record for ``(file_name, image)`` pairs: each image's segments, every other
    one as polygons (COCO's usual form), the rest as compressed RLE."""
    from pycocotools import mask as mask_utils

    record = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "segment"}]}
    for image_id, (file_name, image) in enumerate(images, start=1):
        record["images"].append({"id": image_id, "file_name": file_name,
                                 "width": image.shape[1], "height": image.shape[0]})
        for segment in sa1b_annotations(image):
            rle = {"size": segment["segmentation"]["size"], "counts": segment["segmentation"]["counts"].encode()}
            polygons = coco_polygons(mask_utils.decode(rle)) if len(record["annotations"]) % 2 == 0 else []
            record["annotations"].append({
                "id": len(record["annotations"]) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": polygons or segment["segmentation"], "area": segment["area"],
                "bbox": segment["bbox"],
            })
    return record


def write_sample_coco(out: Path, num_images: int = 8, seed: int = 0, max_side: int = 512) -> Path:
    """Write ``images/<photo>_<NNN>.jpg`` and ``instances.json`` (COCO instance annotations, polygons
    and RLE) under ``out``; returns the JSON's path (use ``out/images`` as the image root)."""
    out = Path(out)
    images = []
    for index, (name, image) in enumerate(sample_images(num_images, seed, max_side)):
        file_name = f"{name}_{index:03d}.jpg"
        _save_image(image, out / COCO_IMAGES / file_name)
        images.append((file_name, image))
    path = out / COCO_FILE
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(coco_record(images)))
    return path
