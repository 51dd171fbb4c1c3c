"""Atomic outputs: write under a temporary name, rename when complete.

A killed job never leaves a file under its final name that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data: object) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> object:
    return json.loads(Path(path).read_text())


def remove_leftovers(folder: Path) -> None:
    """Remove the temporary files of :func:`atomic_path` that a killed process left in ``folder``."""
    if Path(folder).is_dir():
        for leftover in Path(folder).glob(".*.tmp*"):
            leftover.unlink(missing_ok=True)
