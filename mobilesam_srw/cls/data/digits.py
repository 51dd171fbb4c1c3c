"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): a real data set for CPU demos.

Two forms: ``digits`` gives ``[1, 8, 8]`` images (for small CNNs); ``digits32`` gives ``[3, 32, 32]``
images (bilinear upsampling, the grey channel repeated) so that the CIFAR models run on them.
The split is fixed: 448 test images (7 full batches of 64, as Table 4's bands need), stratified
by class, chosen with seed 0; the other 1,349 are the training set. Pixels (0..16) are scaled to
[0, 1], then normalised by the training set's mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from mobilesam_srw.cls.data.items import TensorImageDataset
from mobilesam_srw.errors import SrwError

TEST_SIZE = 448
SPLIT_SEED = 0
# Padding of the random-shift augmentation per image side: 1 px at 8 px, 4 px at 32 px (as CIFAR).
SHIFT_PADDING = {8: 1, 32: 4}


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SrwError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices (into scikit-learn's order) of the fixed train and test sets."""
    from sklearn.model_selection import train_test_split

    _, labels = _load_digits()
    train, test = train_test_split(
        np.arange(len(labels)), test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


def digits_transform(train: bool, image_size: int, mean: float, std: float, channels: int) -> v2.Compose:
    """Training: a random shift (zero = background padding, then a crop back to size); both: normalise."""
    steps = [v2.RandomCrop(image_size, padding=SHIFT_PADDING[image_size])] if train else []
    return v2.Compose([*steps, v2.Normalize([mean] * channels, [std] * channels)])


def digits_datasets(image_size: int = 8, train_transform: bool = True):
    """``(train, test, 10)`` digits data sets giving item dicts.

    Args:
        image_size: 8 (``[1, 8, 8]`` images) or 32 (``[3, 32, 32]``).
        train_transform: augment the training set with random shifts (no flips: digits are not symmetric).
    """
    if image_size not in SHIFT_PADDING:
        raise SrwError(f"digits image size must be 8 or 32, got {image_size}")
    pixels, labels = _load_digits()
    images = torch.from_numpy(pixels).unsqueeze(1)  # [N, 1, 8, 8] in [0, 1]
    if image_size == 32:
        images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    train_index, test_index = digits_split()
    mean = float(images[train_index].mean())
    std = float(images[train_index].std())
    channels = images.shape[1]
    names = [str(digit) for digit in range(10)]
    datasets = []
    for index, augment in ((train_index, train_transform), (test_index, False)):
        keys = [f"digits/{i:04d}" for i in index]
        transform = digits_transform(augment, image_size, mean, std, channels)
        datasets.append(TensorImageDataset(images[index], torch.from_numpy(labels[index]), keys, transform, names))
    return datasets[0], datasets[1], 10
