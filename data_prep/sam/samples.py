"""SAM precompute's samples: one planned sample -> the pixels the teacher embeds and the bytes the shard stores.

The stored image is a JPEG (``shards.JPEG_QUALITY``), and training and evaluation see its
decoded pixels; so the teacher embeds exactly those decoded pixels (resize, encode, decode
with the shard reader's decoder, then embed), never the pixels before JPEG. A test checks
that re-embedding a stored sample's image reproduces its stored embedding.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sample_pipeline import PlannedSamples
from mobilesam_srw.data_prep.sources import BadSample, ImageLimits, SampleRef
from mobilesam_srw.sam.teachers import sam_vit


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
    resized = resize(rgb) if resize is not None else sam_vit.resize_longest_side(rgb, input_size)
    jpeg = shards.encode_image(resized)
    return jpeg, shards.decode_image(jpeg)


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
