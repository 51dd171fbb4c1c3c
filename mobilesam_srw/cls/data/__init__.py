"""Classification data sets by name, each giving item dicts.

Every item is ``{"image": float [C, H, W] normalised, "label": int, "index": int, "key": str}``
(see :func:`~mobilesam_srw.cls.data.items.make_item`); the default collate batches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from mobilesam_srw.cls.data.cifar import cifar_datasets, read_cifar
from mobilesam_srw.cls.data.digits import digits_datasets
from mobilesam_srw.cls.data.imagenet import imagenet_datasets
from mobilesam_srw.cls.data.items import TensorImageDataset, make_item
from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set name stands for.

    Attributes:
        num_classes: classes (for ImageNet the nominal 1000; the folder decides).
        image_size: input side the models take.
        in_channels: image channels.
        model_family: the ``mobilesam_srw.cls.models`` family built for it (None: none fits).
        needs_data: whether ``data_dir`` is required (digits ship with scikit-learn).
        build: ``(data_dir, train_transform) -> (train, val, num_classes)``.
    """

    num_classes: int
    image_size: int
    in_channels: int
    model_family: str | None
    needs_data: bool
    build: Callable[[Path | None, bool], tuple[Dataset, Dataset, int]]


DATASETS: dict[str, DatasetSpec] = {
    "cifar100": DatasetSpec(100, 32, 3, "cifar", True, lambda d, t: cifar_datasets(d, "cifar100", t)),
    "cifar10": DatasetSpec(10, 32, 3, "cifar", True, lambda d, t: cifar_datasets(d, "cifar10", t)),
    "imagenet": DatasetSpec(1000, 224, 3, "imagenet", True, lambda d, t: imagenet_datasets(d, t)),
    "digits": DatasetSpec(10, 8, 1, "digits", False, lambda d, t: digits_datasets(8, t)),
    "digits32": DatasetSpec(10, 32, 3, "cifar", False, lambda d, t: digits_datasets(32, t)),
}

# The model family (``mobilesam_srw.cls.models``) of each data set; None: no registry model takes its images.
DATASET_FAMILY: dict[str, str | None] = {name: spec.model_family for name, spec in DATASETS.items()}


def dataset_fingerprint(*datasets: Dataset) -> str:
    """A SHA-256 of what the data sets hold (pixels and labels in memory; image files' relative paths and
    labels for folders), so ``--resume`` knows the data by its content, not by its path."""
    import hashlib

    digest = hashlib.sha256()
    for dataset in datasets:
        if isinstance(dataset, TensorImageDataset):
            digest.update(repr((tuple(dataset.images.shape), str(dataset.images.dtype))).encode())
            digest.update(dataset.images.contiguous().numpy().tobytes())
            digest.update(dataset.labels.contiguous().numpy().tobytes())
        else:
            keys = getattr(dataset, "keys", None)
            labels = [label for _, label in getattr(getattr(dataset, "folder", None), "samples", [])]
            digest.update(repr((type(dataset).__name__, len(dataset), keys, labels)).encode())
    return digest.hexdigest()


def build_datasets(
    dataset_name: str, data_dir: str | Path | None, train_transform: bool = True
) -> tuple[Dataset, Dataset, int]:
    """The training and evaluation sets of a named data set.

    Args:
        dataset_name: a key of :data:`DATASETS`.
        data_dir: ``cifar100`` / ``cifar10``: the folder holding the extracted folder or archive
            (either format); ``imagenet``: the folder holding ``train/`` and ``val/``; digits: unused.
        train_transform: augment the training set (False: the evaluation transform for both,
            e.g. to compute teacher features).

    Returns:
        ``(train, val, num_classes)``; CIFAR's and digits' val is their test set.

    Raises:
        SrwError: an unknown name, a missing ``data_dir``, or unreadable data (one line).
    """
    if dataset_name not in DATASETS:
        raise SrwError(f"unknown data set {dataset_name!r}; expected one of {', '.join(DATASETS)}")
    spec = DATASETS[dataset_name]
    if spec.needs_data and data_dir is None:
        raise SrwError(f"the {dataset_name} data set needs a data folder (--data)")
    return spec.build(Path(data_dir) if data_dir is not None else None, train_transform)


__all__ = [
    "DATASETS",
    "DATASET_FAMILY",
    "DatasetSpec",
    "TensorImageDataset",
    "build_datasets",
    "dataset_fingerprint",
    "make_item",
    "read_cifar",
]
