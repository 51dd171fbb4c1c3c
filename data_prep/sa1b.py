"""Reading SA-1B as released: ``sa_*.tar`` files of ``sa_<id>.jpg`` + ``sa_<id>.json``, or
folders of such pairs (extracted tars), from any mix of globs, folders and tar paths.

Tars are scanned by their headers only; a sample is then read with one seek. Problems
with one sample or one tar never stop a run: they become :class:`Skip` records.
"""

from __future__ import annotations

import glob
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mobilesam_srw.errors import SrwError
from mobilesam_srw.tar_index import FileSpan, index_tar

_MEMBER = re.compile(r"^(sa_\d+)\.(jpg|json)$")


@dataclass(frozen=True)
class Skip:
    """A sample (or a whole source) left out, and why."""

    key: str
    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class SampleRef:
    """An image/annotation pair found in a source (a tar, or a folder of pairs)."""

    key: str
    source: str
    image: FileSpan
    annotation: FileSpan


@dataclass(frozen=True)
class Sources:
    """The inputs: tar files, and loose pairs found in folders (key -> (jpg, json) paths)."""

    tars: list[Path]
    loose: list[SampleRef]
    skipped: list[Skip]


def _has_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def discover_sources(paths: Sequence[str | Path]) -> Sources:
    """Expand globs, folders (their ``*.tar`` and ``sa_*.jpg/json`` pairs) and tar files."""
    tars: set[Path] = set()
    loose_files: dict[Path, list[Path]] = {}
    for given in paths:
        text = str(given)
        matches = [Path(m) for m in sorted(glob.glob(text))] if _has_glob(text) else [Path(text)]
        if not matches:
            raise SrwError(f"no input matches {text}")
        for path in matches:
            if path.is_dir():
                tars.update(path.glob("*.tar"))
                loose_files.setdefault(path, []).extend(p for p in path.iterdir() if _MEMBER.match(p.name))
            elif path.is_file() and path.suffix == ".tar":
                tars.add(path)
            elif path.is_file() and _MEMBER.match(path.name):
                loose_files.setdefault(path.parent, []).append(path)
            elif path.exists():
                raise SrwError(f"not an SA-1B tar or folder: {path}")
            else:
                raise SrwError(f"no such file or folder: {path}")
    loose, skipped = [], []
    for folder, files in sorted(loose_files.items()):
        members = {p.name: FileSpan(str(p)) for p in sorted(set(files))}
        refs, skips = _pair_members(members, str(folder))
        loose.extend(refs)
        skipped.extend(skips)
    return Sources(sorted(tars), loose, skipped)


def _pair_members(members: dict[str, FileSpan], source: str) -> tuple[list[SampleRef], list[Skip]]:
    """Pair ``sa_<id>.jpg`` with ``sa_<id>.json`` (in first-seen order); the rest are skips."""
    pairs: dict[str, dict[str, FileSpan]] = {}
    skipped = []
    for name, span in members.items():
        match = _MEMBER.match(Path(name).name)
        if match is None:
            skipped.append(Skip(Path(name).name, source, "stray member (not sa_<id>.jpg or .json)"))
            continue
        pairs.setdefault(match.group(1), {})[match.group(2)] = span
    refs = []
    for key, found in pairs.items():
        if "jpg" not in found:
            skipped.append(Skip(key, source, "missing jpg"))
        elif "json" not in found:
            skipped.append(Skip(key, source, "missing json"))
        else:
            refs.append(SampleRef(key, source, found["jpg"], found["json"]))
    return refs, skipped


def scan_tar(path: Path) -> tuple[list[SampleRef], list[Skip]]:
    """Index a tar by its headers. An unreadable or truncated tar keeps what was read before the fault."""
    members, error = index_tar(path)
    refs, skipped = _pair_members(members, path.name)
    if error is not None:
        skipped.append(Skip("", path.name, f"unreadable tar after {len(members)} members: {error}"))
    return refs, skipped


class BadSample(ValueError):
    """A sample that cannot be used; its message is the skip reason."""


def load_sample(ref: SampleRef) -> tuple[np.ndarray, dict]:
    """Read and validate one pair: ``[H, W, 3]`` uint8 RGB and the SA-1B JSON record."""
    try:
        record = json.loads(ref.annotation.read())
    except (ValueError, OSError) as error:
        raise BadSample(f"malformed json: {error}") from None
    image_record = record.get("image") if isinstance(record, dict) else None
    if not isinstance(image_record, dict) or not isinstance(record.get("annotations"), list):
        raise BadSample("malformed json: needs an 'image' record and an 'annotations' list")
    try:
        with Image.open(io.BytesIO(ref.image.read())) as opened:
            rgb = np.asarray(opened.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadSample(f"corrupt image: {error}") from None
    expected = (image_record.get("height"), image_record.get("width"))
    if expected != rgb.shape[:2]:
        raise BadSample(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its json says {expected[1]}x{expected[0]}")
    return rgb, record
