"""A small SA-1B-format data set from scikit-image's bundled photos, for demos and tests.

Each image is a real photo (astronaut, coffee, chelsea, rocket, ...), cropped and scaled
differently per sample; its masks are the largest Felzenszwalb segments, encoded as
COCO RLE by pycocotools, in SA-1B's annotation schema. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from mobilesam_srw.atomic import atomic_path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "coins")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]


def _variant(photo: np.ndarray, rng: np.random.Generator, max_side: int) -> np.ndarray:
    """A random crop (60-100% of each side), scaled so its longest side is at most ``max_side``."""
    height, width = photo.shape[:2]
    crop_h, crop_w = (int(side * rng.uniform(0.6, 1.0)) for side in (height, width))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
    scale = min(1.0, max_side / max(crop.size))
    return np.asarray(crop.resize((max(8, round(crop.width * scale)), max(8, round(crop.height * scale)))))


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


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


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
    rng = np.random.default_rng(seed)
    photos = {name: _photo(name) for name in PHOTOS}
    paths = []
    for tar_offset, start in enumerate(range(0, num_images, images_per_tar)):
        path = out / f"sa_{first_tar + tar_offset:06d}.tar"
        with atomic_path(path) as temporary, tarfile.open(temporary, "w") as archive:
            for index in range(start, min(start + images_per_tar, num_images)):
                image_id = (first_tar + tar_offset) * 100_000 + index + 1
                image = _variant(photos[PHOTOS[index % len(PHOTOS)]], rng, max_side)
                jpeg, record = sa1b_sample(image, image_id)
                add_member(archive, f"sa_{image_id}.jpg", jpeg)
                add_member(archive, f"sa_{image_id}.json", record)
        paths.append(path)
    return paths
