"""One writer per output folder: an exclusive lock that a second job is refused by, with one line.

Rank 0 of a job holds the lock (an ``flock`` on ``<folder>/.srw.lock``, released by the kernel when the
process ends, even after a kill) for as long as the job writes; the other ranks of the same job do not
lock, and every rank gets rank 0's verdict, so ranks never lock each other out or hang. The job removes
the lock file when it ends (normally, by an error, by Ctrl-C or by SIGTERM, which the CLI turns into an
interrupt), and a job that fails before writing anything removes the folders it made; only a SIGKILL
leaves the file, which the next job takes over. A job that opened the file just before its holder removed
it sees that the file it locked is no longer the folder's, and locks the new one instead.
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
    while True:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise SrwError(f"{folder} is in use by another srw job ({holder}); wait for it, or choose another "
                           "output folder") from None
        if _is_current(descriptor, folder):
            break
        os.close(descriptor)  # its holder removed it between our open and our lock: lock the new one
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()}".encode())
    return descriptor


def _is_current(descriptor: int, folder: Path) -> bool:
    """Whether the open file is still ``folder``'s lock file (not removed or replaced since it was opened)."""
    try:
        current = os.stat(folder / LOCK_FILE, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (what the lock will create)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


@contextlib.contextmanager
def output_lock(folder: Path, ctx: DistributedContext | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock (rank 0) while the block runs; a second job is refused by :class:`SrwError`."""
    ctx = ctx or DistributedContext()
    folder = Path(folder)
    descriptor, error, created = None, None, _first_missing(folder.absolute())
    if ctx.is_main:
        try:
            descriptor = _acquire(folder)
        except SrwError as refused:
            error = str(refused)
    ctx.agree(error)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if descriptor is not None:
            _release(descriptor, folder, created if failed else None)


def _release(descriptor: int, folder: Path, created: Path | None) -> None:
    """Remove the lock file (still locked, so no job can hold it meanwhile), then release the lock; with
    ``created`` (a failed job), also the folders the lock made, if the job left nothing in them."""
    with contextlib.suppress(OSError):
        if _is_current(descriptor, folder):
            (folder / LOCK_FILE).unlink()
    os.close(descriptor)  # closing releases the lock
    if created is None:
        return
    with contextlib.suppress(OSError):  # not empty: the job wrote something, keep it
        path = folder.absolute()
        while True:
            path.rmdir()
            if path == created:
                break
            path = path.parent
