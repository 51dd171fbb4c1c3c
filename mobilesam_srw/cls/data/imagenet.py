"""ImageNet-1K (or any class-folder tree) as ``train/`` and ``val/`` torchvision ImageFolders."""

from __future__ import annotations

import os
from pathlib import Path

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from mobilesam_srw.cls.data.items import make_item
from mobilesam_srw.errors import SrwError


def imagenet_transform(train: bool) -> transforms.Compose:
    """The usual 224 px transforms (as mdistiller): training RandomResizedCrop(224) + flip;
    evaluation Resize(256) + CenterCrop(224); both ToTensor and ImageNet normalisation."""
    steps = (
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        if train
        else [transforms.Resize(256), transforms.CenterCrop(224)]
    )
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


class ImageFolderItems(Dataset):
    """A torchvision ImageFolder giving item dicts; ``key`` is the image path relative to the data folder."""

    def __init__(self, folder: datasets.ImageFolder, data_root: Path) -> None:
        self.folder = folder
        self.class_names = list(folder.classes)
        self.keys = [Path(path).relative_to(data_root).as_posix() for path, _ in folder.samples]

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> dict:
        """The item; an image that cannot be decoded (corrupt, truncated, empty) is one line naming it."""
        try:
            image, label = self.folder[index]
        except Exception as error:  # Pillow raises many types on a malformed file
            reason = (str(error).strip().splitlines() or [""])[0]
            raise SrwError(f"cannot read image {self.folder.samples[index][0]}: {type(error).__name__}: "
                           f"{reason}"[:400]) from None
        return make_item(image, label, index, self.keys[index])


class LinkSafeImageFolder(datasets.ImageFolder):
    """torchvision's ``ImageFolder`` whose walk of each class folder does not follow linked folders (torchvision
    follows them: a link loop multiplies samples, a link to another class's folder mislabels them), and in
    which each file counts once: of several paths to one file, a real file beats a link (its own class wins),
    else the first in sorted order. A class folder given as a link is followed (one level, no loop)."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        if extensions is not None:
            def is_valid_file(path: str) -> bool:  # noqa: F811 (torchvision's rule)
                return datasets.folder.has_file_allowed_extension(path, extensions)
        found: list[tuple[str, int, str, bool]] = []  # path, class, real path, is a link
        for name in sorted(class_to_idx):
            top = os.path.join(directory, name)
            real_top = os.path.realpath(top)  # below it, only file links may lead elsewhere (folders are not followed)
            for folder, folders, files in os.walk(top):  # linked folders: listed, not entered
                folders.sort()
                for file in sorted(files):
                    path = os.path.join(folder, file)
                    if not is_valid_file(path):
                        continue
                    if os.path.islink(path):
                        if os.path.isfile(path):  # not a broken link
                            found.append((path, class_to_idx[name], os.path.realpath(path), True))
                    else:
                        real = os.path.join(real_top, os.path.relpath(path, top))
                        found.append((path, class_to_idx[name], real, False))
        chosen: dict[str, tuple[bool, int]] = {}  # real path -> (is a link, its place in found)
        for order, (_, _, real, link) in enumerate(found):
            if real not in chosen or link < chosen[real][0]:
                chosen[real] = (link, order)
        keep = {order for _, order in chosen.values()}
        kept = [(path, index) for order, (path, index, _, _) in enumerate(found) if order in keep]
        present = {index for _, index in kept}
        if (empty := sorted(name for name, index in class_to_idx.items() if index not in present)) and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
        return kept


def _image_folder(root: Path, split: str, train: bool) -> datasets.ImageFolder:
    folder = root / split
    if not folder.is_dir():
        raise SrwError(f"{root}: no {split}/ folder; --data must hold train/ and val/ class folders")
    try:
        return LinkSafeImageFolder(str(folder), transform=imagenet_transform(train))
    except (FileNotFoundError, OSError) as error:
        raise SrwError(f"{folder}: {str(error).strip().splitlines()[0]}") from None


def imagenet_datasets(data_dir: str | Path, train_transform: bool = True):
    """``(train, val, num_classes)`` from ``data_dir/train`` and ``data_dir/val`` (one sub-folder per class).

    Raises:
        SrwError: a missing folder, a folder without images, or train and val with different classes.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise SrwError(f"data folder not found: {root}")
    train = _image_folder(root, "train", train_transform)
    val = _image_folder(root, "val", False)
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))
        raise SrwError(
            f"{root}: train/ and val/ have different class folders ({len(train.classes)} vs {len(val.classes)}; "
            f"e.g. {only[0] if only else 'a different order'})"
        )
    return ImageFolderItems(train, root), ImageFolderItems(val, root), len(train.classes)
