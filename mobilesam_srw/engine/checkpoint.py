"""Run checkpoints: atomic, ``weights_only`` loadable, with every RNG state.

A checkpoint holds the trainable module, optimiser, scheduler and AMP scaler states, the step,
the run's defining settings and every RNG state, so ``--resume`` continues exactly. RNG states
are stored as tensors and plain Python values, which ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mobilesam_srw.atomic import atomic_file, remove_leftovers, write_failures
from mobilesam_srw.errors import SrwError

STUDENT_FILE = "student.pt"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"


def rng_states() -> dict:
    numpy_state = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, state: dict) -> None:
    """``torch.save`` under a temporary name, then rename; a full disk or a folder we may not write is one
    :class:`SrwError` line naming the file, and leaves no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_failures(path), atomic_file(path) as stream:
        torch.save(state, stream)


def load(path: Path) -> dict:
    """A checkpoint's dict, read with ``weights_only=True``; anything else is one-line :class:`SrwError`."""
    path = Path(path)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad or unsafe file
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise SrwError(f"cannot read checkpoint {path}: not a PyTorch checkpoint of weights "
                       f"({type(error).__name__}: {reason})") from None
    if not isinstance(record, dict):
        raise SrwError(f"checkpoint {path} holds a {type(record).__name__}, not a dict of weights")
    return record


def clean_checkpoint_folder(run: Path) -> None:
    """Remove temporary checkpoints a killed run left behind."""
    remove_leftovers(Path(run) / CHECKPOINT_DIR)
