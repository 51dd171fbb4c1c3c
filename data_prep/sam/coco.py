"""The COCO source (``--coco instances.json --image-root DIR``): images with instance annotations.

The file is COCO's object-detection format: ``images`` (``id``, ``file_name`` relative to the
image root, ``width``, ``height``) and ``annotations`` (``image_id``, ``segmentation`` as
polygons or RLE, ``bbox``, ``iscrowd``, ``category_id``). Each image becomes a sample whose
annotations are validated against the decoded image and stored in SA-1B's layout
(``annotations.coco_annotations``), so ``eval --mode gt`` reads them as it reads SA-1B's.

A file that is not COCO at all (or not a regular file, or larger than the file-size limit) stops
the run before any work, with one line. An image entry that is malformed, duplicated, names a path
outside the image root (by its name, or through a link: its real path must lie inside the root's), a
file that an earlier entry names under another spelling (``a.jpg``, ``./a.jpg``, ``a.jpg/``), or a
file that is missing, not regular or oversize is skipped and recorded; annotations that are not
objects or name no listed image are counted in one record.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from mobilesam_srw.atomic import is_within, read_regular
from mobilesam_srw.data_prep.images import decode_rgb, file_problem, read_file
from mobilesam_srw.data_prep.keys import unique_keys
from mobilesam_srw.data_prep.sources import (
    BadSample,
    Discovery,
    ImageLimits,
    LoadedSample,
    Skip,
    SourceOptions,
    single_sample_unit,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.annotations import coco_annotations


@dataclass(frozen=True)
class CocoRef:
    """One COCO image entry and its raw annotations.

    Args:
        key: its sample key (from ``file_name``).
        source: the COCO file's name.
        path: the image file.
        image: the image record (``id`` as ``image_id``, ``file_name``, ``width``, ``height``).
        annotations: its annotations as the file gives them (validated when loaded).
    """

    key: str
    source: str
    path: str
    image: dict
    annotations: tuple

    root: str = ""  # the image root's real path: the file must still lie inside it when read

    def load(self, limits: ImageLimits) -> LoadedSample:
        if self.root and not is_within(self.path, self.root):
            raise BadSample("file_name leaves the image root (through a link)")
        rgb = decode_rgb(read_file(Path(self.path), limits.max_file_bytes), limits)
        height, width = rgb.shape[:2]
        expected = (self.image.get("height", height), self.image.get("width", width))
        if expected != (height, width):
            raise BadSample(f"image is {width}x{height} (upright) but the COCO file says {expected[1]}x{expected[0]}")
        annotations, dropped = coco_annotations(list(self.annotations), (height, width))
        return LoadedSample(rgb, {**self.image, "width": width, "height": height}, annotations, dropped)


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_coco(path: Path, max_bytes: int = ImageLimits.max_file_bytes) -> tuple[dict, str]:
    """The parsed COCO file (its top level checked) and the sha256 of its bytes; a file that
    cannot be read as COCO (not a regular file, larger than ``max_bytes``, not JSON) is one
    :class:`SrwError` line."""
    raw = read_regular(Path(path), max_bytes, "--coco")  # a FIFO or /dev/zero: refused, never read
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise SrwError(f"--coco: cannot read {path}: {type(error).__name__}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SrwError(f"--coco: {path} is not a COCO file (no 'images' list)")
    if not isinstance(data.get("annotations", []), list):
        raise SrwError(f"--coco: {path}: 'annotations' is not a list")
    return data, hashlib.sha256(raw).hexdigest()


def _image_problem(entry: object, seen_ids: set) -> str | None:
    if not isinstance(entry, dict):
        return "malformed image entry (not an object)"
    if not _is_id(entry.get("id")):
        return "malformed image entry (no integer or text id)"
    if entry["id"] in seen_ids:
        return f"duplicate image id {entry['id']}"
    name = entry.get("file_name")
    if not isinstance(name, str) or not name or "\0" in name:
        return "malformed image entry (no file_name)"
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        return "file_name leaves the image root"
    for field in ("width", "height"):
        if field in entry and not _is_size(entry[field]):
            return f"malformed image entry ({field} is not a positive integer)"
    return None


def discover(paths: Sequence[str | Path], options: SourceOptions = SourceOptions()) -> Discovery:
    """Read one COCO file; one unit per valid image entry (a subset chooses single images)."""
    if len(paths) != 1:
        raise SrwError(f"--coco takes one file, got {len(paths)}")
    if options.image_root is None:
        raise SrwError("--coco needs --image-root, the folder its file_names are relative to")
    root = Path(options.image_root)
    if not root.is_dir():
        raise SrwError(f"--image-root: no such folder: {root}")
    coco_file = Path(paths[0])
    data, digest = read_coco(coco_file, options.limits.max_file_bytes)
    real_root = os.path.realpath(root)
    source = coco_file.name

    by_image: dict[object, list] = defaultdict(list)
    orphans = 0
    for annotation in data.get("annotations", []):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if _is_id(image_id):
            by_image[image_id].append(annotation)
        else:
            orphans += 1

    skipped: list[Skip] = []
    entries: list[dict] = []
    seen_ids: set = set()
    seen_files: set[str] = set()
    for entry in data["images"]:
        shown = str(entry.get("file_name", entry.get("id", "")))[:200] if isinstance(entry, dict) else ""
        problem = _image_problem(entry, seen_ids)
        if problem is None:
            real = os.path.realpath(root / entry["file_name"])
            if not is_within(real, real_root):
                problem = "file_name leaves the image root (through a link)"
            elif real in seen_files:
                problem = "the same file as an earlier image entry (another spelling of its file_name)"
            else:
                problem = file_problem(root / entry["file_name"], options.limits)
        if problem is None:
            seen_files.add(real)
        if problem is not None:
            skipped.append(Skip(shown, source, problem))
            if isinstance(entry, dict) and _is_id(entry.get("id")):
                seen_ids.add(entry["id"])
            continue
        seen_ids.add(entry["id"])
        entries.append(entry)
    orphans += sum(len(found) for image_id, found in by_image.items() if image_id not in seen_ids)
    if orphans:
        skipped.append(Skip("", source, f"{orphans} annotations without the image_id of a listed image"))

    keys = unique_keys([str(PurePosixPath(entry["file_name"])) for entry in entries])  # ./a.jpg/ -> a.jpg
    units = []
    for key, entry in zip(keys, entries):
        image = {"image_id": entry["id"], "file_name": entry["file_name"],
                 **{field: entry[field] for field in ("width", "height") if field in entry}}
        ref = CocoRef(key, source, str(root / entry["file_name"]), image, tuple(by_image.get(entry["id"], ())),
                      real_root)
        units.append(single_sample_unit(ref))
    return Discovery(units, skipped, "COCO images", {"coco_file": source, "coco_sha256": digest})
