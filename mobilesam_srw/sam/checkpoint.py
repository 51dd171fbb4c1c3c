"""Training checkpoints (atomic, ``weights_only`` loadable) and the trained student file.

A checkpoint holds the model, optimiser, scheduler and AMP scaler states, the step, and
every RNG state, so ``--resume`` continues exactly. RNG states are stored as tensors and
plain Python values, which ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mobilesam_srw.atomic import atomic_path
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.student import SamStudent, build_student

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
    """``torch.save`` under a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load(path: Path) -> dict:
    if not Path(path).is_file():
        raise SrwError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SrwError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None


def student_record(student: SamStudent, **extra) -> dict:
    """What identifies a trained student: its registry name, input size and weights."""
    return {"student": student.name, "img_size": student.img_size, "model": student.state_dict(), **extra}


def load_student(path: Path) -> tuple[SamStudent, dict]:
    """A student from a run folder (its ``student.pt``, else the last checkpoint) or a file."""
    path = Path(path)
    if path.is_dir():
        final = path / STUDENT_FILE
        path = final if final.is_file() else path / CHECKPOINT_DIR / LAST_CHECKPOINT
    record = load(path)
    if "student" not in record or "model" not in record:
        raise SrwError(f"{path} is not a student file or training checkpoint of srw-sam")
    student = build_student(record["student"], record["img_size"])
    student.load_state_dict(record["model"])
    return student.eval(), record
