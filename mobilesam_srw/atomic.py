"""Atomic outputs: write under a temporary name, rename when complete; never through a planted link.

A killed job never leaves a file under its final name that looks complete. On a shared file system
another user may plant links in an output folder; so a temporary file is created exclusively
(``O_CREAT | O_EXCL``: never through a link) under an unpredictable name, checked to still be the
file we created before it is renamed (a rename replaces a link at the final name, never follows it),
and the folders we make inside an output folder (``parts/``, ``checkpoints/``, ...) are refused when
they are links. Inputs read as JSON come only from regular files of a bounded size.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from mobilesam_srw.errors import SrwError

MAX_JSON_BYTES = 1 << 30  # a JSON input (COCO file, manifest, run record) larger than this is refused


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[tuple[int, Path]]:
    """An exclusively created, unpredictably named sibling of ``path`` (its descriptor and name); renamed to
    ``path`` when the block succeeds, removed when it fails."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.tmp", dir=path.parent)
    temporary = Path(name)
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())  # as an ordinary new file (mkstemp makes it 0600)
        created = os.fstat(descriptor)
        yield descriptor, temporary
        now = os.lstat(temporary)
        if (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino) or not stat.S_ISREG(now.st_mode):
            raise SrwError(f"{temporary} was replaced while we wrote it (by another process?); nothing was renamed")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (already created, empty, by us); on success it is renamed to
    ``path``, on error removed. For writers that need a file name (ONNX, figures, tar and safetensors files);
    :func:`atomic_file` gives an open file, which is safer still."""
    with _temporary(Path(path)) as (_, temporary):
        yield temporary


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Yield the open temporary file of ``path`` (``mode`` ``"wb"`` or ``"w"``); renamed to ``path`` when the
    block succeeds, removed when it fails."""
    with _temporary(Path(path)) as (descriptor, _):
        with os.fdopen(os.dup(descriptor), mode) as stream:
            yield stream


@contextlib.contextmanager
def write_failures(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (``OSError``, or the ``RuntimeError`` that ``torch.save`` and
    safetensors raise for one, e.g. ``unexpected pos`` on a full disk) into one :class:`SrwError` line
    naming the file and the reason. Use it around a write only (a writer's other faults are not I/O)."""
    try:
        yield
    except OSError as error:
        raise SrwError(f"cannot write {path}: {error.strerror or error}") from None
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SrwError(f"cannot write {path} (disk full, or a folder we may not write?): {reason[:200]}") from None


def write_json(path: Path, data: object) -> None:
    with write_failures(path), atomic_file(path, "w") as stream:
        stream.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def open_unlinked(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``: a link planted at ``path`` is refused with
    one :class:`SrwError` line instead of being written through; other errors propagate."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SrwError(f"{path} is a link; refusing to write through it (remove it)") from None
        raise


class FileRefused(Exception):
    """Why :func:`read_bounded` read nothing: ``reason`` one of "missing", "unreadable" (``detail`` says
    why), "not_regular" (``mode`` is the file's), "oversize" (``size`` its size in bytes, or None when it
    grew past the limit while being read)."""

    def __init__(self, reason: str, detail: str = "", mode: int = 0, size: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.mode, self.size = reason, detail, mode, size


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path`` of at most ``max_bytes``, else :class:`FileRefused`:
    opened non-blocking (a FIFO never hangs), checked on its descriptor (a file swapped after a check is
    caught), read with a limit (a file that grows is never read without bound)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused("missing") from None
    except OSError as error:
        raise FileRefused("unreadable", str(error.strerror or error)) from None
    with os.fdopen(descriptor, "rb") as stream:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused("not_regular", mode=info.st_mode)
        if info.st_size > max_bytes:
            raise FileRefused("oversize", size=info.st_size)
        try:
            data = stream.read(max_bytes + 1)
        except OSError as error:
            raise FileRefused("unreadable", str(error.strerror or error)) from None
    if len(data) > max_bytes:
        raise FileRefused("oversize")
    return data


def read_regular(path: Path, max_bytes: int, what: str = "") -> bytes:
    """The bytes of the regular file at ``path`` of at most ``max_bytes``; a FIFO, a device, a folder or a
    larger file is refused with one :class:`SrwError` line (:func:`read_bounded`)."""
    label = f"{what}: " if what else ""
    try:
        return read_bounded(path, max_bytes)
    except FileRefused as refused:
        reason = {"missing": f"no such file: {path}", "unreadable": f"cannot read {path}: {refused.detail}",
                  "not_regular": f"{path} is not a regular file",
                  "oversize": f"{path} is larger than {max_bytes} bytes"}[refused.reason]
        raise SrwError(label + reason) from None


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> object:
    """A JSON file, read only from a regular file of at most ``max_bytes`` (see :func:`read_regular`);
    malformed JSON raises :class:`ValueError` as ``json.loads`` does."""
    return json.loads(read_regular(Path(path), max_bytes))


def output_subfolder(path: Path) -> Path:
    """Make (or reuse) a folder that we create inside an output folder; a link there (planted by someone
    else, or pointing anywhere) or a file is refused with one line, so nothing is written through it."""
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    try:
        info = os.lstat(path)
    except OSError as error:
        raise SrwError(f"cannot make {path}: {error.strerror or error}") from None
    if stat.S_ISLNK(info.st_mode):
        raise SrwError(f"{path} is a link; refusing to write through it (remove it, or choose another output folder)")
    if not stat.S_ISDIR(info.st_mode):
        raise SrwError(f"{path} exists and is not a folder")
    return path


def same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (through links and ``..``; missing ones by path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (real paths, so links count where they lead)."""
    inner, outer = os.path.realpath(path), os.path.realpath(folder)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def refuse_input_as_output(out: Path, inputs: list[Path], flag: str = "--out") -> None:
    """One line when ``out`` is one of ``inputs`` (we never overwrite, or delete, what we were given to read)."""
    for given in inputs:
        if given is not None and same_path(out, given):
            raise SrwError(f"{flag} {out} is one of the inputs ({given}); choose another output")


def remove_leftovers(folder: Path) -> None:
    """Remove the temporary files of :func:`atomic_path` that a killed process left in ``folder``."""
    if Path(folder).is_dir():
        for leftover in Path(folder).glob(".*.tmp*"):
            if not leftover.is_dir() or leftover.is_symlink():
                leftover.unlink(missing_ok=True)
