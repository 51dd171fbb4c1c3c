"""A teacher's input transform: resize the longest side, normalise, zero-pad bottom/right.

Each teacher family has its own, named in the teacher record so that every later stage
rebuilds the same one:

- ``sam`` (SAM ViT-H/L/B, MobileSAM, the tiny teacher): ``SamPredictor.set_image``:
  ``ResizeLongestSide`` (PIL, antialiased), ``(x - pixel_mean) / pixel_std``, zero padding.
- ``litemedsam`` (LiteMedSAM, ``CVPR24_LiteMedSAM_infer.py`` of bowang-lab/MedSAM):
  longest side to the input size with OpenCV's ``INTER_AREA`` (new size ``int(side * scale
  + 0.5)``, as ``ResizeLongestSide``), per-image min-max scaling to [0, 1] over all three
  channels of the resized image, then zero padding.

Both pad *after* normalising, so padding is zero in the encoder's input. Loaders pad uint8
images on the CPU (:func:`mobilesam_srw.sam.transforms.pad_image`) and call
:meth:`Preprocessing.normalize_padded` on the device.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import transforms

MIN_MAX_EPSILON = 1e-8  # LiteMedSAM's floor on max - min (a constant image maps to zeros)


@dataclass(frozen=True)
class Preprocessing(ABC):
    """Resize, normalise and pad images for an encoder of square input ``input_size``.

    Args:
        input_size: the encoder's input side S in pixels.
    """

    input_size: int
    name: ClassVar[str] = ""
    # True: the resized image lies at the top left of the S x S input, the rest is padding; False: the
    # input is the whole image stretched to S x S (SAM 2), so every patch is image.
    pads: ClassVar[bool] = True

    @abstractmethod
    def resize(self, image: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB -> ``[h, w, 3]`` uint8 with ``max(h, w) == S``."""

    @abstractmethod
    def normalize_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` images padded with anything at the bottom/right, uint8 or float in
        [0, 255], and their ``[B, 2]`` (h, w) -> ``[B, 3, S, S]`` float32 encoder input, zero
        outside each image."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """What a runtime needs to reproduce this transform, in words and numbers (an ONNX export's metadata)."""

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` after :meth:`resize` of an image of ``(height, width)``."""
        return ResizeLongestSide.get_preprocess_shape(height, width, self.input_size)

    def __call__(self, resized_images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """Already resized ``[h, w, 3]`` uint8 images -> ``[B, 3, S, S]`` float32 on ``device``."""
        for image in resized_images:
            if max(image.shape[:2]) != self.input_size:
                raise ValueError(f"images: expected a longest side of {self.input_size}, got {image.shape[:2]}")
        padded = torch.stack([transforms.pad_image(image, self.input_size) for image in resized_images])
        sizes = torch.tensor([image.shape[:2] for image in resized_images])
        return self.normalize_padded(padded.to(device), sizes.to(device))


@dataclass(frozen=True)
class SamPreprocessing(Preprocessing):
    """``SamPredictor.set_image`` then ``Sam.preprocess`` (see the module docstring)."""

    name: ClassVar[str] = "sam"

    def resize(self, image: np.ndarray) -> np.ndarray:
        return ResizeLongestSide(self.input_size).apply_image(image)

    def describe(self) -> dict[str, str]:
        return {"resize": "longest side to input_size with segment-anything's ResizeLongestSide.apply_image",
                "normalize": "(pixel - pixel_mean) / pixel_std, RGB in [0, 255]",
                "pixel_mean": json.dumps(list(transforms.PIXEL_MEAN)),
                "pixel_std": json.dumps(list(transforms.PIXEL_STD)),
                "pad": "zeros at the bottom and right to input_size x input_size, after normalising"}

    def normalize_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        return transforms.normalize_padded(images, sizes)


@dataclass(frozen=True)
class LiteMedSamPreprocessing(Preprocessing):
    """LiteMedSAM's inference transform (see the module docstring)."""

    name: ClassVar[str] = "litemedsam"

    def resize(self, image: np.ndarray) -> np.ndarray:
        height, width = self.resized_shape(*image.shape[:2])
        return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)

    def describe(self) -> dict[str, str]:
        return {"resize": "longest side to input_size with cv2.resize(..., interpolation=cv2.INTER_AREA), new sides "
                          "int(side * input_size / longest + 0.5)",
                "normalize": f"per image, over all three channels: (pixel - min) / max(max - min, {MIN_MAX_EPSILON:g})",
                "pad": "zeros at the bottom and right to input_size x input_size, after normalising"}

    def normalize_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        valid = transforms.valid_pixel_mask(sizes, images.shape[-1])
        pixels = images.float()
        low = pixels.masked_fill(~valid, float("inf")).amin(dim=(1, 2, 3), keepdim=True)
        high = pixels.masked_fill(~valid, float("-inf")).amax(dim=(1, 2, 3), keepdim=True)
        return (pixels - low) / (high - low).clamp_min(MIN_MAX_EPSILON) * valid


PREPROCESSINGS: dict[str, type[Preprocessing]] = {
    SamPreprocessing.name: SamPreprocessing,
    LiteMedSamPreprocessing.name: LiteMedSamPreprocessing,
}


def build_preprocessing(name: str, input_size: int) -> Preprocessing:
    """The preprocessing registered as ``name`` (``sam``, ``litemedsam``) at ``input_size``."""
    if name not in PREPROCESSINGS:
        raise SrwError(f"unknown preprocessing {name!r}; expected one of {', '.join(PREPROCESSINGS)}")
    return PREPROCESSINGS[name](input_size)


def student_input(preprocessing: Preprocessing, images: torch.Tensor, sizes: torch.Tensor,
                  student_size: int) -> torch.Tensor:
    """A student's input from padded images in the teacher's frame.

    The teacher's normalisation (:meth:`Preprocessing.normalize_padded`: LiteMedSAM's min-max
    scaling, SAM's mean and std), then, for a student of another input size, the whole padded
    square resized to ``student_size`` (bilinear; antialiased when shrinking), so the image keeps
    its place and the student's ``S/stride`` grid covers the teacher's grid cell for cell.

    Args:
        preprocessing: the teacher's.
        images: ``[B, 3, S, S]`` uint8 (or float in [0, 255]), padded at the bottom/right.
        sizes: ``[B, 2]`` (h, w) of each image in that frame.
        student_size: the student's square input size.
    """
    normalized = preprocessing.normalize_padded(images, sizes)
    if student_size == normalized.shape[-1]:
        return normalized
    return F.interpolate(normalized, size=(student_size, student_size), mode="bilinear", align_corners=False,
                         antialias=student_size < normalized.shape[-1])
