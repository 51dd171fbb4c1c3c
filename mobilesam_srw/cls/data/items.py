"""The item contract of every classification data set, and a data set over in-memory image tensors."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


def make_item(image: torch.Tensor, label: int, index: int, key: str) -> dict:
    """One sample: ``image`` float ``[C, H, W]`` normalised, ``label``, ``index`` in the data set, a stable ``key``."""
    return {"image": image, "label": int(label), "index": int(index), "key": key}


class TensorImageDataset(Dataset):
    """Images held in memory as one ``[N, C, H, W]`` tensor (uint8 or float).

    Args:
        images: ``[N, C, H, W]``.
        labels: ``[N]`` class indices.
        keys: ``N`` stable names, e.g. ``"cifar100/test/00042"``.
        transform: applied to each ``[C, H, W]`` image; must return a normalised float tensor.
        class_names: the name of each class index, if known.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        keys: Sequence[str],
        transform: Transform,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not (len(images) == len(labels) == len(keys)):
            raise ValueError(f"images, labels and keys differ in length: {len(images)}, {len(labels)}, {len(keys)}")
        self.images = images
        self.labels = labels.long()
        self.keys = list(keys)
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return make_item(self.transform(self.images[index]), int(self.labels[index]), index, self.keys[index])
