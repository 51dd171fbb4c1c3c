"""``srw-sam export --format onnx``: the student image encoder, and SAM's prompt encoder and mask decoder.

Files (``--out`` a folder):

- ``encoder.onnx``: input ``images`` ``[batch, 3, S, S]`` float32, the image resized so its longest
  side is ``S`` (``ResizeLongestSide``), normalised with SAM's pixel mean and std, then zero-padded
  bottom and right (``Sam.preprocess``); output ``image_embeddings`` ``[batch, 256, S/16, S/16]``.
- ``decoder.onnx`` (``--with-decoder``): segment-anything's ONNX decoder (``SamOnnxModel``, exported
  as its ``scripts/export_onnx_model.py`` does, all four masks): inputs ``image_embeddings``
  ``[1, 256, S/16, S/16]``, ``point_coords`` ``[1, N, 2]`` (in the resized image's pixels, as
  ``ResizeLongestSide.apply_coords`` gives them), ``point_labels`` ``[1, N]`` (1 foreground, 0
  background, 2 and 3 box corners, -1 padding), ``mask_input`` ``[1, 1, S/4, S/4]``,
  ``has_mask_input`` ``[1]``, ``orig_im_size`` ``[2]`` (h, w), all float32; outputs ``masks``
  ``[1, 4, h, w]`` logits at the original size, ``iou_predictions`` ``[1, 4]`` and ``low_res_masks``
  ``[1, 4, S/4, S/4]``. Mask 0 is SAM's single-mask output, masks 1-3 its multimask outputs.

``--out`` ending in ``.onnx`` names the encoder file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel

from mobilesam_srw.atomic import refuse_input_as_output
from mobilesam_srw.errors import SrwError
from mobilesam_srw.onnx_export import (
    DEFAULT_OPSET,
    check_opset,
    export_image_encoder_onnx,
    export_onnx,
    require_onnx,
)
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.export import student_sam
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.sam.transforms import EMBEDDING_DIM

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ENCODER_INPUT = "images"
ENCODER_OUTPUT = "image_embeddings"
DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]
# segment-anything's example image size for tracing the decoder; any size works once exported.
EXAMPLE_IMAGE_SIZE = (1500, 2250)


class SamOnnxDecoder(SamOnnxModel):
    """segment-anything's :class:`SamOnnxModel`, cropping the padding at the image's own size.

    segment-anything 1.0 crops with ``int()`` of a tensor, which the tracer records as a constant,
    so its exported masks fit only the aspect ratio of the example image (later upstream code
    slices with the tensors). This crop slices with the tensors, so the size stays a graph input.
    """

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        resized_size = self.resize_longest_image_size(orig_im_size, self.img_size)
        masks = masks[..., : resized_size[0], : resized_size[1]]
        original_size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(original_size[0], original_size[1]), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class OnnxOutputs:
    """Where ``export --format onnx`` writes: the encoder file, and the decoder file or None."""

    encoder: Path
    decoder: Path | None


def onnx_outputs(out: Path, with_decoder: bool) -> OnnxOutputs:
    """Resolve ``out``: a folder (created) for ``encoder.onnx`` [+ ``decoder.onnx``], or an encoder ``.onnx`` file."""
    out = Path(out)
    if out.suffix == ".onnx":
        if with_decoder:
            raise SrwError(f"the decoder is written beside the encoder: give a folder, not the file {out}")
        if out.is_dir():
            raise SrwError(f"output {out} is a folder; give a folder without the .onnx suffix or a file name")
        folder, encoder, decoder = out.parent, out, None
    else:
        if out.exists() and not out.is_dir():
            raise SrwError(f"output {out} is a file; give a folder, or a file name ending in .onnx")
        folder, encoder, decoder = out, out / ENCODER_FILE, (out / DECODER_FILE if with_decoder else None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SrwError(f"cannot create output folder {folder}: {error.strerror}") from None
    return OnnxOutputs(encoder, decoder)


def export_student_onnx(student: SamStudent, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """The student as ``images [batch, 3, S, S] -> image_embeddings [batch, 256, S/16, S/16]``."""
    return export_image_encoder_onnx(student, student.img_size, path, opset, ENCODER_INPUT, ENCODER_OUTPUT)


def export_decoder_onnx(sam: Sam, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """``sam``'s prompt encoder and mask decoder through :class:`SamOnnxDecoder` (all four masks).

    The example inputs and dynamic axes (``num_points``) are those of segment-anything's
    ``scripts/export_onnx_model.py``.
    """
    img_size = sam.image_encoder.img_size
    embedding_side = sam.prompt_encoder.image_embedding_size
    example = {
        "image_embeddings": torch.randn(1, EMBEDDING_DIM, *embedding_side),
        "point_coords": torch.randint(0, img_size, (1, 5, 2)).float(),
        "point_labels": torch.randint(0, 4, (1, 5)).float(),
        "mask_input": torch.randn(1, 1, *(4 * side for side in embedding_side)),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor(EXAMPLE_IMAGE_SIZE, dtype=torch.float32),
    }
    points_axis = {1: "num_points"}
    return export_onnx(
        SamOnnxDecoder(sam, return_single_mask=False),
        example,
        DECODER_OUTPUTS,
        path,
        opset,
        dynamic_axes={"point_coords": points_axis, "point_labels": points_axis},
    )


def export_run_onnx(
    run: Path, out: Path, sam_checkpoint: Path | None = None, opset: int = DEFAULT_OPSET
) -> OnnxOutputs:
    """Write a run's student as ``encoder.onnx`` and, given ``sam_checkpoint``, ``decoder.onnx``.

    Args:
        run: a run folder of ``srw-sam train``, or a ``student.pt`` / checkpoint file.
        out: a folder, or (without a decoder) the encoder's ``.onnx`` file.
        sam_checkpoint: a SAM checkpoint (released ``sam_vit_*.pth`` or ``teacher_tiny.pth``) whose
            prompt encoder and mask decoder to export; its input size must be the student's.
        opset: ONNX opset, 17 to 20.
    """
    require_onnx("onnx")
    check_opset(opset)
    inputs = [checkpoint.student_path(run)] + ([Path(sam_checkpoint)] if sam_checkpoint is not None else [])
    for written in (Path(out), Path(out) / ENCODER_FILE, Path(out) / DECODER_FILE):
        refuse_input_as_output(written, inputs)  # never overwrite what we read
    student, _ = checkpoint.load_student(run)
    sam = student_sam(student, sam_checkpoint) if sam_checkpoint is not None else None
    outputs = onnx_outputs(out, with_decoder=sam is not None)
    export_student_onnx(student, outputs.encoder, opset)
    if sam is not None:
        export_decoder_onnx(sam, outputs.decoder, opset)
    return outputs
