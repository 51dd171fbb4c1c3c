"""SAM precompute's samples: one planned sample -> the pixels the teacher embeds and the bytes the shard stores.

The teacher embeds what its own inference would embed: the original image through the teacher's own
resize (``SamPredictor``'s ``ResizeLongestSide`` for SAM's family, OpenCV's area resize for LiteMedSAM),
then its normalisation and padding. The shard stores that resized image, PNG by default (lossless: the
stored pixels are the teacher's input, bit for bit) or JPEG with ``--image-format jpeg`` (smaller; the
student then reads a lossy copy of the teacher's input, the teacher's embedding stays that of the
original). The embedding never comes from a decoded or resized copy. Tests check the stored embedding
against the teacher's inference on the original image (SamPredictor, LiteMedSAM's reference).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sample_pipeline import PlannedSamples
from mobilesam_srw.data_prep.sources import BadSample, ImageLimits, SampleRef
from mobilesam_srw.sam.teachers import sam_vit


def teacher_pixels(rgb: np.ndarray, input_size: int, resize: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> np.ndarray:
    """``[H, W, 3]`` uint8 original -> ``[h, w, 3]`` uint8 resized by the teacher's own resize (default
    ``SamPredictor``'s), longest side ``input_size``: what the teacher embeds and the shard stores."""
    height, width = rgb.shape[:2]
    if min(ResizeLongestSide.get_preprocess_shape(height, width, input_size)) < 1:
        raise BadSample(f"a {width}x{height} image's short side rounds to 0 px at input size {input_size}")
    return resize(rgb) if resize is not None else sam_vit.resize_longest_side(rgb, input_size)


class PreparedSamples(PlannedSamples):
    """Planned ``(shard, ref)`` pairs -> the teacher's input pixels, the stored image bytes and the sample
    record; or a skip (the prepared items of :func:`~mobilesam_srw.data_prep.shard_encoding.encode_shards`).

    Args:
        items: the shard index and reference of each sample, in order.
        input_size: the teacher's input size (longest side after resizing).
        limits: file size and pixel limits.
        resize: the teacher's resize (a picklable callable, e.g. a teacher preprocessing's ``resize``);
            default ``SamPredictor``'s.
        image_format: ``png`` or ``jpg`` (:data:`mobilesam_srw.shards.IMAGE_FORMATS`).
        jpeg_quality: the JPEG quality of ``jpg``.
    """

    def __init__(self, items: list[tuple[int, SampleRef]], input_size: int, limits: ImageLimits,
                 resize: Callable[[np.ndarray], np.ndarray] | None = None, image_format: str = "png",
                 jpeg_quality: int = shards.JPEG_QUALITY) -> None:
        super().__init__(items, limits)
        self.input_size = input_size
        self.resize = resize
        self.image_format, self.jpeg_quality = image_format, jpeg_quality

    def prepare(self, ref: SampleRef, sample) -> dict:
        pixels = teacher_pixels(sample.rgb, self.input_size, self.resize)
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
        image = shards.encode_image(pixels, self.image_format, self.jpeg_quality)
        return {"pixels": pixels, "image": image, "meta": meta, "annotations_dropped": sample.dropped}
