"""SAM's image frame (input size, patch, embedding width, pixel statistics) and its input transform split in
two for fast loading: pad uint8 on the CPU, normalise on the device.

``Sam.preprocess`` normalises then pads with zeros, so the padding is zero *after*
normalisation. :func:`normalize_padded` reproduces that on a uint8 batch padded by
:func:`pad_image` (a test checks it equals ``Sam.preprocess``). SAM's pixel statistics are
ImageNet's (timm's constants) in [0, 255] (a test checks them against ``Sam``'s buffers).
"""

from __future__ import annotations

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

INPUT_SIZE = 1024  # the encoder's square input of every released SAM (and MobileSAM)
PATCH_SIZE = 16  # input pixels per embedding cell: a 64 x 64 grid at 1024 px
EMBEDDING_DIM = 256  # channels of SAM's image embedding, its prompt encoder's and mask decoder's width
PIXEL_MEAN = tuple(255 * value for value in IMAGENET_DEFAULT_MEAN)
PIXEL_STD = tuple(255 * value for value in IMAGENET_DEFAULT_STD)


def pad_image(image: np.ndarray, size: int) -> torch.Tensor:
    """``[h, w, 3]`` uint8 -> ``[3, size, size]`` uint8, image at the top left, zeros elsewhere."""
    height, width = image.shape[:2]
    padded = torch.zeros(3, size, size, dtype=torch.uint8)
    padded[:, :height, :width] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return padded


def valid_pixel_mask(sizes: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 2]`` (h, w) -> ``[B, 1, size, size]`` bool, true on image pixels."""
    rows = torch.arange(size, device=sizes.device)
    inside_rows = rows[None, :] < sizes[:, :1]
    inside_cols = rows[None, :] < sizes[:, 1:2]
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


def normalize_padded(images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``[B, 3, S, S]`` uint8 padded images -> float32 as ``Sam.preprocess`` gives them."""
    mean = torch.tensor(PIXEL_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=images.device).view(1, 3, 1, 1)
    normalized = (images.float() - mean) / std
    return normalized * valid_pixel_mask(sizes, images.shape[-1])


def valid_patch_mask(sizes: torch.Tensor, side: int, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """``[B, 2]`` (h, w) -> ``[B, side*side]`` bool: the patch holds at least one image pixel."""
    starts = torch.arange(side, device=sizes.device) * patch_size
    rows = starts[None, :] < sizes[:, :1]
    cols = starts[None, :] < sizes[:, 1:2]
    return (rows[:, :, None] & cols[:, None, :]).flatten(1)
