"""Random access into uncompressed tars: index the headers once, then read a member with one seek."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileSpan:
    """Where a member's bytes are: a plain file (offset -1) or ``size`` bytes at ``offset`` in a tar."""

    path: str
    offset: int = -1
    size: int = -1

    def read(self) -> bytes:
        if self.offset < 0:
            return Path(self.path).read_bytes()
        with open(self.path, "rb") as stream:
            stream.seek(self.offset)
            data = stream.read(self.size)
        if len(data) != self.size:
            raise ValueError(f"truncated member: {len(data)} of {self.size} bytes")
        return data


def index_tar(path: Path) -> tuple[dict[str, FileSpan], Exception | None]:
    """Regular members of a tar by name, in order, and the error that stopped the scan (if any)."""
    members: dict[str, FileSpan] = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if member.isfile():
                    members[member.name] = FileSpan(str(path), member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as error:
        return members, error
    return members, None
