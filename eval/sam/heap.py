"""Reusing freed memory in evaluation on the CPU (glibc), instead of fresh pages for every large tensor.

SAM's mask decoder allocates some forty tensors of ``[prompts, 4096, 256]`` float32 per call (268 MB
at 64 prompts). glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap``, whose pages the kernel must fault in and zero on first touch, and unmaps it on free; on
this project's 2-core CPU that is about a third of the decoder's time (system time and page faults;
``scripts/bench_eval.py --vs-sam`` measures it). :func:`reused_heap` makes glibc serve them from its
heap and keep freed memory for the next call, the way tcmalloc or jemalloc behave; the numbers
computed are the same. The settings are restored on exit; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager
from typing import Iterator

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's mallopt parameters
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 0, M_MMAP_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
REUSING = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 64 << 20}  # C ints


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


@contextmanager
def reused_heap(enabled: bool = True) -> Iterator[bool]:
    """Within the block, large allocations come from glibc's heap and freed memory is kept for reuse
    (``mallopt``: no mmap, no trimming); on exit glibc's defaults are set again and the heap trimmed.

    Yields whether it applied (glibc, and ``enabled``). The process keeps its peak memory while inside.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    for parameter, value in REUSING.items():
        libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value))
    try:
        yield True
    finally:
        for parameter, value in DEFAULTS.items():
            libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value))
        libc.malloc_trim(ctypes.c_size_t(0))
