"""Real photos for sample data, demos and tests: scikit-image's bundled photos, cropped and scaled.

Each task's sample-data writer (``data_prep/sam/sample_data.py``, ``data_prep/clip/sample_data.py``)
lays these out in its own format; the same seed gives the same images everywhere. Nothing is downloaded.
"""

from __future__ import annotations

import io
import tarfile
from typing import Iterator

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "coins")


def photo(name: str) -> np.ndarray:
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


def sample_images(num_images: int, seed: int = 0, max_side: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """``(photo name, [H, W, 3] uint8)`` of ``num_images`` photo variants, the same for a seed."""
    rng = np.random.default_rng(seed)
    photos = {name: photo(name) for name in PHOTOS}
    for index in range(num_images):
        name = PHOTOS[index % len(PHOTOS)]
        yield name, _variant(photos[name], rng, max_side)


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
