"""Weights every task loads: strict state-dict loading (keys, shapes, finite values) and file checksums.

Files are read with ``torch.load(weights_only=True)`` (:func:`mobilesam_srw.engine.checkpoint.load`);
nothing is ever unpickled. Classification teachers, CLIP students and SAM teachers use these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from mobilesam_srw.engine import checkpoint as checkpoint_io
from mobilesam_srw.errors import SrwError

# Wrappers that training scripts put around a state dict: mdistiller and RepDistiller save
# ``{"model": state_dict, ...}``, many others ``{"state_dict": state_dict, ...}``.
WRAPPER_KEYS = ("model", "state_dict")
# DataParallel / DistributedDataParallel prefix every key with this.
PARALLEL_PREFIX = "module."


def _first(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def unwrap_state_dict(checkpoint: object, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint.

    Args:
        checkpoint: what ``torch.load`` returned: a state dict, or a dict holding one under
            ``"model"`` or ``"state_dict"``.
        source: the file name, for messages.

    Returns:
        The tensors by parameter name, a ``module.`` prefix on every key removed.

    Raises:
        SrwError: no state dict found.
    """
    if not isinstance(checkpoint, Mapping):
        raise SrwError(f"{source}: expected a state dict or a dict holding one, got {type(checkpoint).__name__}")
    state = checkpoint
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        wrapped = [key for key in WRAPPER_KEYS if isinstance(checkpoint.get(key), Mapping)]
        if not wrapped:
            raise SrwError(
                f"{source}: not a state dict and has no {' or '.join(repr(k) for k in WRAPPER_KEYS)} entry "
                f"(top-level keys: {_first([str(k) for k in checkpoint])})"
            )
        state = checkpoint[wrapped[0]]
    if not state or not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise SrwError(f"{source}: the state dict is empty or holds entries that are not named tensors")
    if all(key.startswith(PARALLEL_PREFIX) for key in state):
        state = {key[len(PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return dict(state)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line SrwError unless ``state`` has exactly the model's keys and shapes, and a floating-point
    tensor wherever the model has one (integer or boolean weights would be cast silently)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    model_name = type(model).__name__
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise SrwError(f"{source} does not fit {model_name}: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise SrwError(
                f"{source} does not fit {model_name}: {key} has shape {tuple(state[key].shape)} "
                f"in the file, {tuple(value.shape)} in the model"
            )
    wrong = [key for key, value in expected.items() if value.is_floating_point() and not state[key].is_floating_point()]
    if wrong:
        raise SrwError(f"{source} does not fit {model_name}: {_first(wrong)} "
                       f"{'is' if len(wrong) == 1 else 'are'} {state[wrong[0]].dtype} in the file, not floating point "
                       "(not a file of trained weights)")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line SrwError if a floating-point tensor of ``state`` holds NaN or inf."""
    bad = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise SrwError(f"{source} holds NaN or inf weights ({_first(bad)}); a diverged or damaged file?")


def load_weights(model: nn.Module, checkpoint: object, source: str) -> nn.Module:
    """Load a loaded checkpoint (a state dict or a dict holding one) into ``model`` strictly: exactly
    its keys and shapes, every weight finite; anything else is a one-line SrwError naming ``source``."""
    state = unwrap_state_dict(checkpoint, source)
    check_state_dict(model, state, source)
    check_finite(state, source)
    model.load_state_dict(state, strict=True)
    return model


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights from a local file into ``model``, strictly (:func:`load_weights`).

    Args:
        model: the model to fill (e.g. ``create("resnet32x4", 100)``).
        path: a ``torch.save`` file holding a state dict, ``{"model": state_dict}`` (mdistiller,
            RepDistiller) or ``{"state_dict": state_dict}``; read with ``weights_only=True``.

    Returns:
        ``model``, with the weights loaded (its mode unchanged).

    Raises:
        SrwError: a missing or unreadable file, keys / shapes that differ from the model's (the
            message names the first missing and unexpected keys), or NaN or inf weights.
    """
    return load_weights(model, checkpoint_io.load(path), str(path))


def file_sha256(path: Path, chunk_bytes: int = 1 << 24) -> str:
    """The hex SHA-256 of a file, read in chunks (a checkpoint's identity in records and manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
