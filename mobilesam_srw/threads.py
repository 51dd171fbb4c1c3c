"""CPU threads: how many a process computes with, beside its DataLoader workers and other processes.

torch's intra-op threads (OpenMP) meet at the end of every parallel operation: when another process holds
a core, one of them waits for the scheduler while the others spin or sleep, so each small operation costs a
time slice instead of microseconds. On a busy 2-core machine the demos' tiny models ran 6-18x slower with
two threads than alone; one thread loses little on a quiet machine (they are too small to split well).
OpenCV's thread pool does the same. So:

- a process with ``workers`` loader processes computes with ``cores - workers`` threads (at least 1);
- the demos, whose models are tiny, compute with one thread.

An explicit ``OMP_NUM_THREADS`` is the user's choice and is always left alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Iterator


def usable_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a batch job's share), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_beside(workers: int) -> int:
    """Compute threads for a process beside ``workers`` loader processes: the cores they leave, at least 1."""
    return max(1, usable_cores() - max(0, workers))


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Compute with ``count`` torch (and, when loaded, OpenCV) threads while the block runs, then restore
    them; with ``OMP_NUM_THREADS`` set, or a count not below the present one, nothing changes."""
    import torch  # here, not at the top: the CLI's modules import this one, and --help needs no PyTorch

    if os.environ.get("OMP_NUM_THREADS") or count >= torch.get_num_threads():
        yield
        return
    torch_threads = torch.get_num_threads()
    with contextlib.suppress(ImportError):
        import cv2  # noqa: F401 (loaded now, so its pool is sized before the block uses it)
    cv2 = sys.modules.get("cv2")
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    torch.set_num_threads(count)
    if cv2 is not None:
        cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if cv2 is not None:
            cv2.setNumThreads(cv2_threads)


def single_threaded(function):
    """Run ``function`` with one compute thread (:func:`cpu_threads`): for the demos, whose models are tiny."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with cpu_threads(1):
            return function(*args, **kwargs)

    return wrapper
