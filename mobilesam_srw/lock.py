"""One writer per output folder: an exclusive lock that a second job is refused by, with one line.

Rank 0 of a job holds the lock (an ``flock`` on ``<folder>/.srw.lock``, released by the kernel when the
process ends, even after a kill) for as long as the job writes; the other ranks of the same job do not
lock, and every rank gets rank 0's verdict, so ranks never lock each other out or hang. The job removes
the lock file when it ends (normally, by an error, by Ctrl-C or by SIGTERM, which the CLI turns into an
interrupt), and a job that fails before writing anything removes the folders it made; only a SIGKILL
leaves the file, which the next job takes over. A job that opened the file just before its holder removed
it sees that the file it locked is no longer the folder's, and locks the new one instead.

The lock file is opened without following links (``O_NOFOLLOW``; a hard link is refused too), so a link
planted in an output folder never makes a job write elsewhere. Processes a job forks (DataLoader workers)
must not keep it: :func:`loader_worker_init` closes their copy and makes them die with their parent, so a
killed job's folder is free at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
from pathlib import Path
from typing import Iterator

from mobilesam_srw.atomic import open_unlinked
from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.errors import SrwError

LOCK_FILE = ".srw.lock"
_ATTEMPTS = 5  # a lock file removed by its releasing holder between our open and our lock: open it again
_PR_SET_PDEATHSIG = 1  # prctl(2)


def _open_lock_file(path: Path) -> int:
    descriptor = open_unlinked(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o644)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(descriptor)
        raise SrwError(f"{path} is not a lock file of ours (not a regular file, or a hard link); remove it")
    return descriptor


def _is_current(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _acquire(folder: Path) -> int:
    """The open, locked lock file of ``folder`` (created with the folder), or a one-line error."""
    if folder.exists() and not folder.is_dir():
        raise SrwError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    for _ in range(_ATTEMPTS):
        descriptor = _open_lock_file(path)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise SrwError(f"{folder} is in use by another srw job ({holder}); wait for it, or choose another "
                           "output folder") from None
        if _is_current(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"pid {os.getpid()}".encode())
            return descriptor
        os.close(descriptor)  # its holder removed it as it let go: lock the folder's new lock file
    raise SrwError(f"{folder}: its lock file keeps changing (another job starting and stopping?); try again")


def is_locked(folder: Path) -> str | None:
    """Who holds ``folder``'s lock (``"pid N"``) while a job writes it, else None; creates nothing."""
    path = Path(folder) / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                             | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(descriptor, 64).decode(errors="replace").strip() or "another process"
        return None
    finally:
        os.close(descriptor)


def loader_worker_init(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: the worker dies with its parent (Linux), and closes the lock
    files it inherited by ``fork``, so a job killed with ``kill -9`` never leaves a worker holding its folder.
    (OpenCV's thread pool is left alone here: resizing it in a forked child can wait forever on a lock that
    a parent thread held at the fork; the parent sizes it before the workers start, see ``threads.py``.)"""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before the line above: go now
            os._exit(1)
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{name}").endswith(os.sep + LOCK_FILE):
                    os.close(int(name))


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
        if _is_current(descriptor, folder / LOCK_FILE):
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
