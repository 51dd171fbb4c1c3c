"""The image-folder source (``--images``): every image below the given folders, no annotations.

Inputs are folders (walked recursively, in sorted order; linked folders are not followed),
image files and quoted globs of either. An image is a regular file named ``*.jpg``,
``*.jpeg``, ``*.jpe``, ``*.png``, ``*.tif``, ``*.tiff``, ``*.webp`` or ``*.bmp`` (any case);
other files, FIFOs and devices, broken links, oversize files and a second path to a file
already found are skipped and recorded without being opened. A sample's key is its path
relative to the folder given (``keys.unique_keys``); its ``source`` is that folder. Files are
taken in the sorted order of (folder, relative path), whatever the order of the inputs, so keys,
the plan and a file found through two inputs (kept once, under the first) never depend on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mobilesam_srw.data_prep.images import (
    decode_rgb,
    file_problem,
    is_image_name,
    read_file,
)
from mobilesam_srw.data_prep.keys import unique_keys
from mobilesam_srw.data_prep.sources import (
    Discovery,
    ImageLimits,
    LoadedSample,
    Skip,
    SourceOptions,
    expand_inputs,
    single_sample_unit,
)
from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class ImageFileRef:
    """One image file.

    Args:
        key: its sample key.
        source: the folder it was found under (as given).
        path: where it is.
        relative: its path relative to ``source`` (the record's ``file_name``).
    """

    key: str
    source: str
    path: str
    relative: str

    def load(self, limits: ImageLimits) -> LoadedSample:
        rgb = decode_rgb(read_file(Path(self.path), limits.max_file_bytes), limits)
        return LoadedSample(rgb, {"file_name": self.relative, "width": rgb.shape[1], "height": rgb.shape[0]})


def _walk(root: Path, skipped: list[Skip]) -> list[str]:
    """Relative paths of the files below ``root``, sorted; linked folders and unreadable ones are skips."""
    found = []

    def unreadable(error: OSError) -> None:
        where = os.path.relpath(error.filename, root) if error.filename else "."
        skipped.append(Skip(where, str(root), f"unreadable folder: {error.strerror or error}"))

    for folder, folders, files in os.walk(root, onerror=unreadable):
        folders.sort()
        for name in list(folders):
            if os.path.islink(os.path.join(folder, name)):
                folders.remove(name)
                skipped.append(Skip(os.path.relpath(os.path.join(folder, name), root), str(root),
                                    "linked folder (not followed)"))
        relative_folder = os.path.relpath(folder, root)
        for name in sorted(files):
            found.append(name if relative_folder == "." else f"{relative_folder}/{name}".replace(os.sep, "/"))
    return found


def _candidates(paths: Sequence[str | Path], skipped: list[Skip]) -> list[tuple[str, str]]:
    """``(source, relative path)`` of every file the inputs name, in input order."""
    candidates = []
    for path in expand_inputs(paths):
        if path.is_dir():
            candidates.extend((str(path), relative) for relative in _walk(path, skipped))
        elif os.path.lexists(path):
            candidates.append((str(path.parent), path.name))
        else:
            raise SrwError(f"no such file or folder: {path}")
    return candidates


def discover(paths: Sequence[str | Path], options: SourceOptions = SourceOptions()) -> Discovery:
    """Find the images below ``paths``: one unit per image (a subset chooses single images)."""
    skipped: list[Skip] = []
    images: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source, relative in sorted(set(_candidates(paths, skipped))):  # keys and order: not the inputs' order
        path = Path(source) / relative
        if not is_image_name(relative):
            skipped.append(Skip(relative, source, f"not an image (extension {path.suffix or 'none'})"))
        elif (problem := file_problem(path, options.limits)) is not None:
            skipped.append(Skip(relative, source, problem))
        elif (real := os.path.realpath(path)) in seen:
            skipped.append(Skip(relative, source, "the same file as an image found before"))
        else:
            seen.add(real)
            images.append((source, relative))
    keys = unique_keys([relative for _, relative in images], [f"{source}/{relative}" for source, relative in images])
    units = [single_sample_unit(ImageFileRef(key, source, str(Path(source) / relative), relative))
             for key, (source, relative) in zip(keys, images)]
    return Discovery(units, skipped, "images")
