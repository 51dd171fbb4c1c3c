"""The SA-1B source: ``sa_*.tar`` files of ``sa_<id>.jpg`` + ``sa_<id>.json``, or folders of
such pairs (extracted tars), from any mix of globs, folders and tar paths.

Tars are scanned by their headers only, and only when a subset chooses them; a sample is
then read with one seek. Problems with one sample or one tar never stop a run: they become
:class:`Skip` records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

from mobilesam_srw.data_prep.images import decode_rgb, file_problem, read_file
from mobilesam_srw.data_prep.sources import (
    BadSample,
    Discovery,
    ImageLimits,
    LoadedSample,
    Skip,
    SourceOptions,
    Unit,
    expand_inputs,
    single_sample_unit,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.annotations import sa1b_annotations
from mobilesam_srw.tar_index import FileSpan, index_tar

_MEMBER = re.compile(r"^(sa_\d{1,100})\.(jpg|json)$")
_LOOSE_NAME = re.compile(r"^sa_\d+\.(jpg|json)$")  # taken from folders; _MEMBER then bounds the key's length
_IMAGE_RECORD_FIELDS = ("image_id", "width", "height", "file_name")


def _read(span: FileSpan, limits: ImageLimits) -> bytes:
    if span.offset < 0:
        return read_file(Path(span.path), limits.max_file_bytes)
    if span.size > limits.max_file_bytes:
        raise BadSample(f"oversize member: {span.size} bytes > {limits.max_file_bytes}")
    try:
        return span.read()
    except (OSError, ValueError) as error:
        raise BadSample(f"unreadable member: {error}") from None


@dataclass(frozen=True)
class Sa1bRef:
    """An image/annotation pair found in a source (a tar, or a folder of pairs)."""

    key: str
    source: str
    image: FileSpan
    annotation: FileSpan

    def load(self, limits: ImageLimits) -> LoadedSample:
        """Read and validate the pair: the image, its SA-1B record, its valid annotations."""
        try:
            record = json.loads(_read(self.annotation, limits))
        except (ValueError, RecursionError) as error:
            raise BadSample(f"malformed json: {type(error).__name__}: {error}") from None
        image_record = record.get("image") if isinstance(record, dict) else None
        if not isinstance(image_record, dict) or not isinstance(record.get("annotations"), list):
            raise BadSample("malformed json: needs an 'image' record and an 'annotations' list")
        rgb = decode_rgb(_read(self.image, limits), limits)
        expected = (image_record.get("height"), image_record.get("width"))
        if expected != rgb.shape[:2]:
            raise BadSample(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its json says {expected[1]}x{expected[0]}")
        annotations, dropped = sa1b_annotations(record["annotations"], rgb.shape[:2])
        image = {name: image_record[name] for name in _IMAGE_RECORD_FIELDS
                 if isinstance(image_record.get(name), (int, str)) and not isinstance(image_record[name], bool)}
        return LoadedSample(rgb, image, annotations, dropped)


def discover(paths: Sequence[str | Path], options: SourceOptions = SourceOptions()) -> Discovery:
    """Expand globs, folders (their ``*.tar`` and ``sa_*.jpg/json`` pairs) and tar files into units:
    each tar is one (chosen whole), each loose pair one."""
    tars: set[Path] = set()
    loose_files: dict[Path, list[Path]] = {}
    for path in expand_inputs(paths):
        if path.is_dir():
            tars.update(p for p in path.glob("*.tar") if p.is_file())
            loose_files.setdefault(path, []).extend(p for p in path.iterdir() if _LOOSE_NAME.match(p.name))
        elif path.is_file() and path.suffix == ".tar":
            tars.add(path)
        elif path.is_file() and _LOOSE_NAME.match(path.name):
            loose_files.setdefault(path.parent, []).append(path)
        elif path.exists():
            raise SrwError(f"not an SA-1B tar or folder: {path}")
        else:
            raise SrwError(f"no such file or folder: {path}")
    tar_names = [tar.name for tar in sorted(tars)]
    if len(set(tar_names)) != len(tar_names):
        raise SrwError("two input tars share a file name; SA-1B tar names must be unique")
    units = [Unit(tar.name, tar.name, "tar", partial(scan_tar, tar)) for tar in sorted(tars)]
    skipped = []
    for folder, files in sorted(loose_files.items()):
        members = {}
        for path in sorted(set(files)):
            problem = file_problem(path, options.limits)
            if problem is None:
                members[path.name] = FileSpan(str(path))
            else:
                skipped.append(Skip(path.name, str(folder), problem))
        refs, skips = _pair_members(members, str(folder))
        units.extend(single_sample_unit(ref) for ref in refs)
        skipped.extend(skips)
    return Discovery(units, skipped, "SA-1B samples")


def _pair_members(members: dict[str, FileSpan], source: str) -> tuple[list[Sa1bRef], list[Skip]]:
    """Pair ``sa_<id>.jpg`` with ``sa_<id>.json`` (in first-seen order); the rest are skips."""
    pairs: dict[str, dict[str, FileSpan]] = {}
    skipped = []
    for name, span in members.items():
        match = _MEMBER.match(Path(name).name)
        if match is None:
            skipped.append(Skip(Path(name).name[:200], source, "stray member (not sa_<id>.jpg or .json)"))
            continue
        pairs.setdefault(match.group(1), {})[match.group(2)] = span
    refs = []
    for key, found in pairs.items():
        if "jpg" not in found:
            skipped.append(Skip(key, source, "missing jpg"))
        elif "json" not in found:
            skipped.append(Skip(key, source, "missing json"))
        else:
            refs.append(Sa1bRef(key, source, found["jpg"], found["json"]))
    return refs, skipped


def scan_tar(path: Path) -> tuple[list[Sa1bRef], list[Skip]]:
    """Index a tar by its headers. An unreadable or truncated tar keeps what was read before the fault."""
    members, error = index_tar(path)
    refs, skipped = _pair_members(members, path.name)
    if error is not None:
        skipped.append(Skip("", path.name, f"unreadable tar after {len(members)} members: {error}"))
    return refs, skipped
