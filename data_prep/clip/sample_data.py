"""A small CLIP data set from scikit-image's bundled photos, for the demo and tests; nothing is downloaded.

Two layouts: img2dataset's WebDataset tars (``<key>.jpg``, ``<key>.txt``, ``<key>.json``, as CC3M is
usually fetched) with made-up captions, and an ImageFolder (one folder per photo, a class-names file
beside it) for zero-shot evaluation. The images are crops of the same photos as the SAM sample data
(:func:`~mobilesam_srw.data_prep.sample_photos.sample_images`); the same seed writes the same data.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from mobilesam_srw.atomic import atomic_path
from mobilesam_srw.data_prep.sample_photos import PHOTOS, add_member, sample_images

# Made-up captions in CC3M's plain style, and the class name of each photo for zero-shot evaluation.
CAPTIONS: dict[str, tuple[str, ...]] = {
    "astronaut": ("an astronaut in a white spacesuit poses with a flag", "portrait of a smiling astronaut"),
    "coffee": ("a cup of coffee on a saucer", "coffee with latte art on a wooden table"),
    "chelsea": ("a tabby cat looks at the camera", "close up of a ginger cat"),
    "rocket": ("a rocket on the launch pad", "the space shuttle before launch"),
    "hubble_deep_field": ("galaxies in the deep field", "a view of distant galaxies in space"),
    "immunohistochemistry": ("a stained tissue sample under a microscope", "cells in a microscope slide"),
    "camera": ("a man with a camera on a tripod", "black and white photo of a photographer"),
    "coins": ("old coins on a table", "a collection of coins"),
}
CLASS_NAMES: dict[str, str] = {
    "astronaut": "astronaut", "coffee": "cup of coffee", "chelsea": "cat", "rocket": "rocket",
    "hubble_deep_field": "galaxy", "immunohistochemistry": "microscope slide", "camera": "photographer",
    "coins": "coin",
}
CLASSNAMES_FILE = "classnames.txt"


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_sample_img2dataset(out: Path, num_images: int = 16, images_per_tar: int = 8, seed: int = 0,
                             max_side: int = 320, faults: bool = False) -> list[Path]:
    """Write img2dataset-layout tars ``00000.tar``, ... of ``num_images`` captioned photo crops.

    Args:
        out: folder to write into (created).
        num_images: valid samples in all.
        images_per_tar: samples per tar.
        seed: chooses crops and captions; the same seed writes the same data.
        max_side: longest image side (img2dataset's CC3M downloads are often resized to 256-512).
        faults: add a corrupt JPEG and a sample without a caption to the last tar (precompute skips both).

    Returns:
        The tars' paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    samples = []
    for index, (name, image) in enumerate(sample_images(num_images, seed, max_side)):
        caption = CAPTIONS[name][int(rng.integers(len(CAPTIONS[name])))]
        record = {"url": f"https://example.com/{name}/{index}.jpg", "caption": caption, "status": "success",
                  "width": int(image.shape[1]), "height": int(image.shape[0])}
        samples.append((f"{index:09d}", [("jpg", _jpeg(image)), ("txt", caption.encode()),
                                         ("json", json.dumps(record).encode())]))
    if faults:
        photo = samples[0][1][0][1]
        samples.append((f"{num_images:09d}", [("jpg", photo[: len(photo) // 3]), ("txt", b"a corrupt jpeg")]))
        samples.append((f"{num_images + 1:09d}", [("jpg", photo), ("json", b"{}")]))  # no caption
    paths = []
    for number, start in enumerate(range(0, num_images, images_per_tar)):
        last = start + images_per_tar >= num_images
        chunk = samples[start:] if last else samples[start : start + images_per_tar]
        path = out / f"{number:05d}.tar"
        with atomic_path(path) as temporary, tarfile.open(temporary, "w") as archive:
            for key, members in chunk:
                for extension, data in members:
                    add_member(archive, f"{key}.{extension}", data)
        paths.append(path)
    return paths


def write_sample_image_folder(out: Path, images_per_class: int = 2, seed: int = 1000, max_side: int = 320,
                              photos: tuple[str, ...] = PHOTOS) -> Path:
    """Write an ImageFolder ``<photo>/<photo>_<NN>.jpg`` and ``classnames.txt`` (one name per class folder,
    in sorted folder order); returns the folder. Use another seed than the training tars'."""
    out = Path(out)
    wanted = {name: 0 for name in photos}
    for name, image in sample_images(images_per_class * len(PHOTOS), seed, max_side):
        if name not in wanted or wanted[name] >= images_per_class:
            continue
        path = out / name / f"{name}_{wanted[name]:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            temporary.write_bytes(_jpeg(image))
        wanted[name] += 1
    (out / CLASSNAMES_FILE).write_text("".join(f"{CLASS_NAMES[name]}\n" for name in sorted(photos)))
    return out
