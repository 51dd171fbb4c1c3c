"""ONNX export of an image encoder (a SAM student here; a CLIP image tower reuses it), checked by onnx.

The graph comes from PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
the one segment-anything's ``scripts/export_onnx_model.py`` uses. With torch 2.14 it writes exactly
the requested opset (the ``torch.export``-based exporter writes opset 18 and cannot convert TinyViT's
``Pad`` down to 17), traces TinyViT in about a second (that one: about six), and needs no onnxscript.
The input has a dynamic batch axis and a fixed spatial size; the traced shape checks of TinyViT and
SAM's neck are all on the spatial size, so they hold for every batch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from mobilesam_srw.atomic import atomic_path
from mobilesam_srw.errors import SrwError

MIN_OPSET = 17  # the first opset with LayerNormalization
MAX_OPSET = 20  # the newest the TorchScript exporter writes
DEFAULT_OPSET = 17
ONNX_EXTRA = 'pip install "mobilesam-srw[onnx]"'


def require_onnx(*modules: str) -> None:
    """Raise a one-line :class:`SrwError` naming the extra to install if a module is missing.

    Args:
        modules: module names; ``onnx`` when none are given.
    """
    for name in modules or ("onnx",):
        try:
            importlib.import_module(name)
        except ImportError:
            raise SrwError(f"ONNX export needs the {name} package: {ONNX_EXTRA}") from None


@contextlib.contextmanager
def _native_output_discarded() -> Iterator[None]:
    """Point file descriptors 1 and 2 at a scratch file while the block runs (native code's prints too)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise SrwError(f"ONNX opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")


def export_onnx(
    module: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    output_names: list[str],
    path: Path,
    opset: int = DEFAULT_OPSET,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Trace ``module`` on ``example_inputs`` (named, in call order) into ``path``, atomically.

    The file is written under a temporary name, must pass ``onnx.checker.check_model``, and is
    then renamed to ``path``.

    Args:
        module: the model; exported in eval mode.
        example_inputs: graph input name -> example tensor, in the order ``forward`` takes them.
        output_names: names of the graph outputs, in the order ``forward`` returns them.
        path: the ``.onnx`` file to write; its folder must exist.
        opset: ONNX opset, :data:`MIN_OPSET` to :data:`MAX_OPSET`.
        dynamic_axes: input or output name -> {axis: symbolic name}, as ``torch.onnx.export`` takes it.
        metadata: the model's metadata properties (what a runtime needs to know to feed it; onnxruntime
            reads them with ``session.get_modelmeta().custom_metadata_map``).
    """
    require_onnx("onnx")
    check_opset(opset)
    import onnx

    path = Path(path)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # The tracer warns on every Python-level shape check; those are on the fixed spatial size.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The TorchScript exporter is deprecated in favour of the dynamo one (see the module docstring).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        try:
            with _native_output_discarded():  # the exporter logs its whole graph natively when an operator fails
                torch.onnx.export(
                    module.eval(),
                    tuple(example_inputs.values()),
                    str(temporary),
                    dynamo=False,
                    input_names=list(example_inputs),
                    output_names=output_names,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamic_axes=dynamic_axes or {},
                )
        except torch.onnx.errors.OnnxExporterError as error:  # e.g. an operator ONNX has no form for
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SrwError(f"{type(module).__name__} cannot be exported to ONNX: {reason}") from None
        if metadata:
            model = onnx.load(str(temporary))
            onnx.helper.set_model_props(model, metadata)
            onnx.save(model, str(temporary))
        onnx.checker.check_model(str(temporary), full_check=True)
    return path


def export_image_encoder_onnx(
    module: nn.Module,
    input_size: int | tuple[int, int],
    path: Path,
    opset: int = DEFAULT_OPSET,
    input_name: str = "images",
    output_name: str = "image_embeddings",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export an image encoder: ``[batch, 3, H, W]`` float32 in, one tensor with the same batch out.

    The batch axis is dynamic (named ``batch``); ``H, W`` are fixed at ``input_size``. The input is
    what ``module`` takes (for a SAM student: the normalised image, zero-padded bottom and right).

    Args:
        module: maps ``[B, 3, H, W]`` to one tensor ``[B, ...]``.
        input_size: ``S`` for a square input, or ``(H, W)``.
        path: the ``.onnx`` file to write; its folder must exist.
        opset: ONNX opset, :data:`MIN_OPSET` to :data:`MAX_OPSET`.
        input_name: the graph's input name.
        output_name: the graph's output name.
        metadata: the model's metadata properties (:func:`export_onnx`).
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    example = {input_name: torch.randn(1, 3, height, width)}
    batch_axis = {0: "batch"}
    return export_onnx(
        module, example, [output_name], path, opset, dynamic_axes={input_name: batch_axis, output_name: batch_axis},
        metadata=metadata,
    )
