"""One planned sample -> the pixels the teacher embeds and the bytes the shard stores.

The stored image is a JPEG (``shards.JPEG_QUALITY``), and training and evaluation see its
decoded pixels; so the teacher embeds exactly those decoded pixels (resize, encode, decode
with the shard reader's decoder, then embed), never the pixels before JPEG. A test checks
that re-embedding a stored sample's image reproduces its stored embedding.

Whatever goes wrong with one sample (reading, decoding, parsing, validating, resizing)
skips it with its reason; only faults of the run itself (output folder, teacher, device)
are raised by the driver.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide
from torch.utils.data import Dataset

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sources import BadSample, ImageLimits, SampleRef
from mobilesam_srw.sam import teacher as sam_teacher

_MAX_REASON = 300


def stored_pixels(rgb: np.ndarray, input_size: int, resize: Callable[[np.ndarray], np.ndarray] | None = None
                  ) -> tuple[bytes, np.ndarray]:
    """Resize ``[H, W, 3]`` uint8 as the teacher does (default: as ``SamPredictor`` does), JPEG-encode it,
    decode it back.

    Returns the JPEG bytes the shard stores and their decoded ``[h, w, 3]`` uint8 pixels,
    which the teacher embeds and every later stage reads.
    """
    height, width = rgb.shape[:2]
    if min(ResizeLongestSide.get_preprocess_shape(height, width, input_size)) < 1:
        raise BadSample(f"a {width}x{height} image's short side rounds to 0 px at input size {input_size}")
    resized = resize(rgb) if resize is not None else sam_teacher.resize_longest_side(rgb, input_size)
    jpeg = shards.encode_image(resized)
    return jpeg, shards.decode_image(jpeg)


def skip_reason(error: Exception) -> str:
    """One line for the manifest: a :class:`BadSample`'s own message, else the error's type and message."""
    text = str(error) if isinstance(error, BadSample) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class PlannedSamples(Dataset):
    """Planned ``(shard, ref)`` pairs -> each sample prepared for its shard, or a skip with its reason:
    the one place where any fault of one sample (reading, decoding, validating, resizing) becomes its
    skip record. A source's preparation is :meth:`prepare`.

    Args:
        items: :func:`~mobilesam_srw.data_prep.shard_encoding.planned_items`.
        limits: file size and pixel limits.
    """

    def __init__(self, items: list[tuple[int, SampleRef]], limits: ImageLimits) -> None:
        self.items = items
        self.limits = limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        shard, ref = self.items[position]
        base = {"shard": shard, "key": ref.key, "source": ref.source}
        try:
            return {**base, **self.prepare(ref, ref.load(self.limits))}
        except Exception as error:  # any fault of this one sample skips it (MemoryError of a huge image too)
            return {**base, "skip": skip_reason(error)}

    def prepare(self, ref: SampleRef, sample) -> dict:
        """The fields of one loaded sample for the encoder hook; raise to skip it."""
        raise NotImplementedError


class PreparedSamples(PlannedSamples):
    """Planned ``(shard, ref)`` pairs -> stored JPEG, its decoded pixels and the sample record; or a skip
    (the prepared items of :func:`~mobilesam_srw.data_prep.shard_encoding.encode_shards`).

    Args:
        items: the shard index and reference of each sample, in order.
        input_size: the teacher's input size (longest side after resizing).
        limits: file size and pixel limits.
        resize: the teacher's resize (a picklable callable, e.g. a teacher preprocessing's ``resize``);
            default ``SamPredictor``'s.
    """

    def __init__(self, items: list[tuple[int, SampleRef]], input_size: int, limits: ImageLimits,
                 resize: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(items, limits)
        self.input_size = input_size
        self.resize = resize

    def prepare(self, ref: SampleRef, sample) -> dict:
        jpeg, pixels = stored_pixels(sample.rgb, self.input_size, self.resize)
        meta = {
            "key": ref.key,
            "source": ref.source,
            "original_size": list(sample.rgb.shape[:2]),
            "input_size": list(pixels.shape[:2]),
            "image": sample.image,
            "annotations": sample.annotations,
        }
        if sample.dropped:
            meta["annotations_dropped"] = sample.dropped
        return {"pixels": pixels, "jpeg": jpeg, "meta": meta, "annotations_dropped": sample.dropped}
