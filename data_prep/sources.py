"""Precompute's input kinds: what a source finds, and what one of its samples loads into.

A source module (SAM's ``sa1b``, ``image_folder``, ``coco``) has a ``discover(inputs, options)``
that returns a :class:`Discovery`: the units a ``--subset`` chooses among (a whole tar, or
one sample), each of which scans into sample references, and what it skipped on the way.
A reference is small and picklable; its ``load`` runs in a DataLoader worker and returns a
:class:`LoadedSample` or raises. The plan, the subset and held-out choice, the writer and the
driver are shared; a new input kind is a new module and one line in its task's registry
(:func:`mobilesam_srw.data_prep.sam.inputs.source_registry`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class ImageLimits:
    """Files and images larger than these are skipped (a limit on what one sample may cost).

    Args:
        max_file_bytes: largest image or annotation file read.
        max_pixels: largest image (width x height) decoded; Pillow itself refuses more than
            about 179 million pixels as a decompression bomb.
    """

    max_file_bytes: int = 1 << 30
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class Skip:
    """A sample (or a whole source) left out, and why."""

    key: str
    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "source": self.source, "reason": self.reason}


class BadSample(ValueError):
    """A sample that cannot be used; its message is the skip reason."""


@dataclass(frozen=True)
class LoadedSample:
    """One sample, read and validated.

    Args:
        rgb: ``[H, W, 3]`` uint8 RGB, upright (EXIF orientation applied).
        image: the image record in SA-1B's layout (``width``, ``height``, ``file_name``, ...).
        annotations: valid annotations in SA-1B's layout (RLE ``segmentation``, ``bbox``, ``area``, ...).
        dropped: invalid annotations left out, counted by reason.
    """

    rgb: np.ndarray
    image: dict
    annotations: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


class SampleRef(Protocol):
    """Where one sample is; ``load`` reads it (in a worker process)."""

    key: str
    source: str

    def load(self, limits: ImageLimits) -> LoadedSample: ...


@dataclass(frozen=True)
class Unit:
    """What a subset chooses among: a whole tar, or one sample.

    Args:
        name: the name a subset ranks or lists (a tar's file name, or a sample key).
        source: the tar or folder it comes from (the manifest's ``sources``).
        granularity: units of one granularity are chosen together (``tar`` or ``sample``).
        scan: its sample references and skips (a tar is indexed only when chosen).
    """

    name: str
    source: str
    granularity: str
    scan: Callable[[], tuple[list[SampleRef], list[Skip]]]


def single_sample_unit(ref: SampleRef) -> Unit:
    """The unit of one already found sample."""
    return Unit(ref.key, ref.source, "sample", lambda: ([ref], []))


@dataclass(frozen=True)
class Discovery:
    """What a source found: the units in a fixed order, and what it skipped while looking.

    Args:
        units: what a subset chooses among.
        skipped: files and entries left out while looking.
        what: the source's samples in words, for messages (``"SA-1B samples"``, ``"images"``).
        identity: what else identifies the input for a resume (e.g. a COCO file's sha256).
    """

    units: list[Unit]
    skipped: list[Skip]
    what: str = "samples"
    identity: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SourceOptions:
    """Options some sources take.

    Args:
        limits: file size and pixel limits (larger files are skipped).
        image_root: the folder a COCO file's ``file_name``s are relative to.
    """

    limits: ImageLimits = field(default_factory=ImageLimits)
    image_root: Path | None = None


Discover = Callable[[Sequence[str], SourceOptions], Discovery]


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The paths given, each quoted glob expanded (sorted); a glob that matches nothing is an error."""
    expanded = []
    for given in paths:
        text = str(given)
        if any(char in text for char in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise SrwError(f"no input matches {text}")
            expanded.extend(Path(match) for match in matches)
        else:
            expanded.append(Path(text))
    return expanded
