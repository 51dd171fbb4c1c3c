"""One writer per output folder: an exclusive lock that a second job is refused by, with one line.

Rank 0 of a job holds the lock (an ``flock`` on ``<folder>/.srw.lock``, released by the kernel when the
process ends, even after a kill) for as long as the job writes; the other ranks of the same job do not
lock, and every rank gets rank 0's verdict, so ranks never lock each other out or hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.errors import SrwError

LOCK_FILE = ".srw.lock"


def _acquire(folder: Path) -> int:
    """The open, locked lock file of ``folder`` (created with the folder), or a one-line error."""
    if folder.exists() and not folder.is_dir():
        raise SrwError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 64).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise SrwError(f"{folder} is in use by another srw job ({holder}); wait for it, or choose another "
                       "output folder") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()}".encode())
    return descriptor


@contextlib.contextmanager
def output_lock(folder: Path, ctx: DistributedContext | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock (rank 0) while the block runs; a second job is refused by :class:`SrwError`."""
    ctx = ctx or DistributedContext()
    folder = Path(folder)
    descriptor, error, created = None, None, not folder.exists()
    if ctx.is_main:
        try:
            descriptor = _acquire(folder)
        except SrwError as refused:
            error = str(refused)
    ctx.agree(error)
    try:
        yield
    except BaseException:
        if descriptor is not None and created:
            _remove_if_only_the_lock(folder)  # a job that failed before writing leaves no folder
        raise
    finally:
        if descriptor is not None:
            os.close(descriptor)  # closing releases the lock


def _remove_if_only_the_lock(folder: Path) -> None:
    with contextlib.suppress(OSError):
        if [entry.name for entry in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
