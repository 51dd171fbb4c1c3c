"""Image files -> upright 8-bit RGB, one way for every source.

What the teacher embeds, what the shard stores and what evaluation sees all start here:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so sizes, annotations and pixels
  are those of the image as a viewer shows it (COCO tools and detectron2 do the same);
- 16-bit images (``I;16`` grayscale PNG/TIFF) are scaled to 8 bits by their high byte, as
  Pillow already does for 16-bit RGB PNGs (never clipped at 255);
- grayscale, palette, CMYK and bilevel images become RGB; an alpha channel is dropped (the
  colour values are kept, as ``cv2.imread`` and Pillow's ``convert("RGB")`` do);
- 32-bit integer images beyond 16-bit values and floating-point images are refused.

Files are read only when they are regular files no larger than :class:`ImageLimits` allows;
a FIFO or a device is refused from its metadata, without being opened for reading.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mobilesam_srw.atomic import FileRefused, read_bounded
from mobilesam_srw.data_prep.sources import BadSample, ImageLimits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _kind(mode: int) -> str:
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def file_problem(path: Path, limits: ImageLimits) -> str | None:
    """Why the file at ``path`` cannot be read as a sample, from its metadata alone; None if it can."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken link" if os.path.islink(path) else "missing file"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({_kind(info.st_mode)})"
    if info.st_size > limits.max_file_bytes:
        return f"oversize file: {info.st_size} bytes > {limits.max_file_bytes}"
    if not os.access(path, os.R_OK):
        return "unreadable: permission denied"
    return None


def read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else raises :class:`BadSample`
    (:func:`~mobilesam_srw.atomic.read_bounded`: a file that became a FIFO after discovery cannot stall a
    worker)."""
    try:
        return read_bounded(path, max_bytes)
    except FileRefused as refused:
        if refused.reason == "not_regular":
            raise BadSample(f"not a regular file ({_kind(refused.mode)})") from None
        if refused.reason == "oversize":
            known = refused.size is not None
            detail = f"{refused.size} bytes > {max_bytes}" if known else f"more than {max_bytes} bytes"
            raise BadSample(f"oversize file: {detail}") from None
        raise BadSample(f"unreadable file: {refused.detail or 'No such file or directory'}") from None


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """An upright Pillow image of any supported mode -> ``[H, W, 3]`` uint8."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image)
        if image.mode == "I" and (values.min(initial=0) < 0 or values.max(initial=0) > 0xFFFF):
            raise BadSample("unsupported image: 32-bit integer pixels beyond 16-bit values")
        gray = (values.astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        raise BadSample("unsupported image: floating-point pixels")
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as error:
        raise BadSample(f"unsupported image mode {image.mode}: {error}") from None


def decode_rgb(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Image file bytes (JPEG, PNG, TIFF, WebP, BMP, ...) -> upright ``[H, W, 3]`` uint8 RGB.

    Raises :class:`BadSample` for an image that is corrupt, larger than ``limits.max_pixels``,
    or of an unsupported pixel format.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's decompression-bomb and palette notes: limits are ours
        try:
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                if width * height > limits.max_pixels:
                    raise BadSample(f"oversize image: {width}x{height} pixels > {limits.max_pixels}")
                upright = ImageOps.exif_transpose(opened)
                rgb = _to_rgb8(upright)
        except BadSample:
            raise
        except Exception as error:  # Pillow raises many types on malformed files (OSError, ValueError, ...)
            raise BadSample(f"corrupt image: {type(error).__name__}: {error}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise BadSample(f"corrupt image: decoded to shape {rgb.shape}")
    return np.ascontiguousarray(rgb)
