"""Choosing the training subset (MobileSAM and the paper use 1% of SA-1B).

A fraction picks whole tars when the input has tars (so the unchosen ones are never
read; SA-1B's ~1000 tars of ~11k images make 1% about 10 tars), and single samples
otherwise (extracted folders, image folders, COCO images). The choice ranks units by a
seeded hash of their names, so it is deterministic, independent of input order, and
stable when inputs are added. A file instead lists tar names (``sa_000020.tar``) or
sample keys (``sa_123``), one a line.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class Subset:
    """Either a ``fraction`` in (0, 1] or the ``names`` listed in a file."""

    fraction: float | None = None
    names: frozenset[str] | None = None

    def describe(self) -> str:
        if self.names is not None:
            return f"{len(self.names)} listed names"
        return f"{self.fraction * 100:g}%"


def read_names(path: Path, option: str) -> frozenset[str]:
    """The names a file lists, one a line (``#`` starts a comment); at least one."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SrwError(f"{option}: cannot read {path}: {error}") from None
    names = [line.split("#")[0].strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise SrwError(f"{option}: {path} lists no names")
    return frozenset(names)


def parse_subset(text: str) -> Subset:
    """``"1%"``, ``"0.5%"``, ``"100%"``, ``"all"``, or the path of a file of names."""
    text = text.strip()
    if text.lower() == "all":
        return Subset(fraction=1.0)
    if text.endswith("%"):
        try:
            fraction = float(text[:-1]) / 100
        except ValueError:
            raise SrwError(f"--subset: not a percentage: {text}") from None
        if not 0 < fraction <= 1:
            raise SrwError(f"--subset: must be in (0%, 100%], got {text}")
        return Subset(fraction=fraction)
    path = Path(text)
    if not path.is_file():
        raise SrwError(f"--subset: expected a percentage like 1% or a file of names, got {text}")
    return Subset(names=read_names(path, "--subset"))


def _rank(name: str, seed: int, salt: str) -> str:
    return hashlib.sha256(f"{seed}:{salt}{name}".encode()).hexdigest()


def choose(names: list[str], subset: Subset, seed: int, salt: str = "") -> set[str]:
    """The chosen ``names``: ``ceil(fraction * len)`` of them (at least 1), or the listed ones.

    Args:
        names: what to choose among.
        subset: a fraction or listed names.
        seed: seeds the ranking.
        salt: makes an independent ranking for another purpose (e.g. the held-out split).
    """
    if subset.names is not None:
        return set(names) & subset.names
    count = max(1, math.ceil(subset.fraction * len(names))) if names else 0
    return set(sorted(names, key=lambda name: _rank(name, seed, salt))[:count])


def check_listed_names_found(subset: Subset, found: set[str], option: str = "--subset") -> None:
    if subset.names is not None and (missing := sorted(subset.names - found)):
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise SrwError(f"{option}: {len(missing)} listed names are not in the input: {shown}")
