"""Sample keys from file names: made safe (``shards.KEY_PATTERN``) and unique.

A key is the file's relative path without its extension, each run of characters outside
``[A-Za-z0-9_-]`` replaced by ``_`` (``day 1/IMG.001.png`` -> ``day_1_IMG_001``). Names too
long for a key keep their head and end in ``-`` and a hash of the whole name. When several
files give one key (``a.jpg`` and ``a.png``, ``a b.jpg`` and ``a_b.jpg``), each of them ends
in ``-`` and a hash of its own name instead, so a file's key depends only on its name and on
which names collide with it, never on the order of discovery.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Sequence

MAX_KEY_LENGTH = 128
_HASH_CHARACTERS = 10
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARACTERS]


def _with_hash(stem: str, name: str) -> str:
    head = stem[: MAX_KEY_LENGTH - _HASH_CHARACTERS - 1]
    return f"{head}-{_name_hash(name)}"


def safe_key(name: str) -> str:
    """The key of a relative path ``name`` (``/``-separated), before collisions are resolved."""
    path = PurePosixPath(name)
    stem = str(path.with_suffix("")) if path.suffix else str(path)
    key = _UNSAFE_RUN.sub("_", stem).strip("_") or "image"
    if len(key) > MAX_KEY_LENGTH:
        key = _with_hash(key, name)
    return key


def unique_keys(paths: Sequence[str], identities: Sequence[str] | None = None) -> list[str]:
    """Safe keys for files, one each, all different.

    Args:
        paths: relative paths (``/``-separated) the keys are made from.
        identities: distinct names of the files that a collision's hash is made from
            (e.g. ``source/relative/path`` when several folders are read); default ``paths``.
    """
    identities = list(paths) if identities is None else list(identities)
    first = [safe_key(path) for path in paths]
    taken = Counter(first)
    keys = [key if taken[key] == 1 else _with_hash(key, identity) for key, identity in zip(first, identities)]
    seen: set[str] = set()
    for index, key in enumerate(keys):  # a hashed key equal to another file's plain key: hash once more
        while key in seen:
            key = _with_hash(key, key + identities[index])
        seen.add(key)
        keys[index] = key
    return keys
