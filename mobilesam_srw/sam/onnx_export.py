"""``srw-sam export --format onnx``: the student image encoder, and the teacher's prompt encoder and mask decoder.

Files (``--out`` a folder):

- ``encoder.onnx``: input ``images`` ``[batch, 3, T, T]`` float32, the image as the teacher took it: its
  longest side resized to the teacher's input size ``T``, normalised, zero-padded bottom and right (SAM:
  ``ResizeLongestSide``, pixel mean and std; LiteMedSAM: OpenCV area resize, per-image min-max scaling);
  output ``image_embeddings`` ``[batch, 256, G, G]``, the teacher's grid. A student of another input size
  ``S`` was trained on that input resized to ``S`` (:func:`~mobilesam_srw.sam.preprocessing.student_input`):
  the graph does that resize itself, as two matrix products, so its input is always the teacher's.
- ``decoder.onnx`` (``--with-decoder``): segment-anything's ONNX decoder (``SamOnnxModel``, exported
  as its ``scripts/export_onnx_model.py`` does, all four masks) with the teacher's weights: inputs
  ``image_embeddings`` ``[1, 256, G, G]``, ``point_coords`` ``[1, N, 2]`` (in the resized image's pixels,
  as ``ResizeLongestSide(T).apply_coords`` gives them), ``point_labels`` ``[1, N]`` (1 foreground, 0
  background, 2 and 3 box corners, -1 padding), ``mask_input`` ``[1, 1, 4G, 4G]``, ``has_mask_input``
  ``[1]``, ``orig_im_size`` ``[2]`` (h, w), all float32; outputs ``masks`` ``[1, 4, h, w]`` logits at the
  original size, ``iou_predictions`` ``[1, 4]`` and ``low_res_masks`` ``[1, 4, 4G, 4G]``. Mask 0 is
  SAM's single-mask output, masks 1-3 its multimask outputs. Box corners (labels 2, 3) are mapped as the
  teacher's inference maps boxes (:mod:`mobilesam_srw.sam.prompts`): LiteMedSAM's truncated to integers,
  SAM's as floats.

Both files carry what a runtime needs to feed them as ONNX metadata (:func:`export_metadata`;
onnxruntime: ``session.get_modelmeta().custom_metadata_map``): the preprocessing's name and
description, ``input_size`` T, ``embedding_size`` G, ``mask_input_size`` 4G, SAM's ``pixel_mean`` and
``pixel_std`` when they apply, the teacher and the student.

``--out`` ending in ``.onnx`` names the encoder file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import nn

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
from mobilesam_srw.sam.preprocessing import Preprocessing, build_preprocessing
from mobilesam_srw.sam.prompts import SAM_BOXES
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.sam.teachers import TEACHERS, decoder_from_checkpoint
from mobilesam_srw.sam.teachers.registry import LEGACY_PREPROCESSING
from mobilesam_srw.sam.teachers.sam_vit import TINY
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


class TeacherFrameEncoder(nn.Module):
    """A student behind the resize its training input took: the teacher-frame input ``[B, 3, T, T]``
    (normalised, padded) resized to the student's ``[B, 3, S, S]`` as
    :func:`~mobilesam_srw.sam.preprocessing.student_input` does (bilinear, antialiased when shrinking),
    written as two matrix products with the resize's own weights, which ONNX expresses exactly (the
    exporter has no form for the antialiased resize).

    Args:
        student: the student, input size ``S``.
        teacher_size: the teacher's input size ``T``.
    """

    def __init__(self, student: SamStudent, teacher_size: int) -> None:
        super().__init__()
        self.student = student
        size = student.img_size
        identity = torch.eye(teacher_size)[None, None]  # the resize of each unit row: its weights
        weights = F.interpolate(identity, size=(size, teacher_size), mode="bilinear", align_corners=False,
                                antialias=size < teacher_size)[0, 0]
        self.register_buffer("resize_weights", weights)  # [S, T]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(self.resize_weights @ images @ self.resize_weights.T)


@dataclass(frozen=True)
class TeacherFrame:
    """What the exported files take: the teacher's preprocessing and input size, its name, and how its own
    inference maps box prompts (:mod:`mobilesam_srw.sam.prompts`)."""

    preprocessing: Preprocessing
    teacher: str
    box_prompts: str = SAM_BOXES

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size


def teacher_frame(student: SamStudent, record: dict, sam: Sam | None = None) -> TeacherFrame:
    """The teacher's frame of a run: from its student record's teacher (input size, preprocessing), else from
    the registry entry of its type, else the decoder's input size; SAM's preprocessing for runs that record
    no teacher (they were all SAM-family). The decoder's, when given, must agree with it.

    Args:
        student: the run's student.
        record: the run's student record (``student.pt``).
        sam: the decoder to export with it, if any.
    """
    teacher = record.get("teacher") or {}
    spec = TEACHERS.get(teacher.get("type"))
    fixed_size = spec is not None and spec.name != TINY.name  # the tiny teacher's size is its file's
    size = teacher.get("input_size") or (spec.input_size if fixed_size else None)
    if size is None:
        size = sam.image_encoder.img_size if sam is not None else student.img_size
    name = teacher.get("preprocessing") or (spec.preprocessing if spec is not None else LEGACY_PREPROCESSING)
    if sam is not None:
        decoder_size, grid = sam.image_encoder.img_size, tuple(sam.prompt_encoder.image_embedding_size)
        if decoder_size != size:
            raise SrwError(f"the run was distilled from {teacher.get('type', 'a teacher')} at {size} px, but this "
                           f"decoder checkpoint works at {decoder_size} px: give the run's teacher checkpoint")
        if tuple(student.embedding_shape[1:]) != grid:
            raise SrwError(f"the teacher's decoder takes a {grid[0]}x{grid[1]} embedding; the student gives "
                           f"{student.embedding_shape[1]}x{student.embedding_shape[2]}")
    boxes = spec.box_prompts if spec is not None else SAM_BOXES
    return TeacherFrame(build_preprocessing(name, int(size)), teacher.get("type", "unknown"), boxes)


def export_metadata(student: SamStudent, frame: TeacherFrame) -> dict[str, str]:
    """The ONNX metadata of both files: how to make the encoder's input, and the sizes the decoder takes."""
    grid = student.grid
    return {
        "preprocessing": frame.preprocessing.name,
        "input_size": str(frame.input_size),
        **frame.preprocessing.describe(),
        "embedding_size": str(grid),
        "mask_input_size": str(4 * grid),
        "box_prompts": frame.box_prompts,
        "teacher": frame.teacher,
        "student": f"{student.name}, {student.img_size} px, output stride {student.stride}",
        "producer": "mobilesam-srw (srw-sam export --format onnx)",
    }


def export_student_onnx(student: SamStudent, path: Path, opset: int = DEFAULT_OPSET,
                        frame: TeacherFrame | None = None) -> Path:
    """The student as ``images [batch, 3, T, T] -> image_embeddings [batch, 256, G, G]``, with its metadata.

    Args:
        student: the student.
        path: the ``.onnx`` file.
        opset: ONNX opset.
        frame: the teacher's frame (default: SAM's preprocessing at the student's input size).
    """
    frame = frame or TeacherFrame(build_preprocessing(LEGACY_PREPROCESSING, student.img_size), "unknown")
    module = student if frame.input_size == student.img_size else TeacherFrameEncoder(student, frame.input_size)
    return export_image_encoder_onnx(module, frame.input_size, path, opset, ENCODER_INPUT, ENCODER_OUTPUT,
                                     metadata=export_metadata(student, frame))


def export_decoder_onnx(sam: Sam, path: Path, opset: int = DEFAULT_OPSET,
                        metadata: dict[str, str] | None = None) -> Path:
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
        metadata=metadata,
    )


def export_run_onnx(
    run: Path, out: Path, sam_checkpoint: Path | None = None, opset: int = DEFAULT_OPSET
) -> OnnxOutputs:
    """Write a run's student as ``encoder.onnx`` and, given ``sam_checkpoint``, ``decoder.onnx``, both with
    the metadata a runtime needs (:func:`export_metadata`).

    Args:
        run: a run folder of ``srw-sam train``, or a ``student.pt`` / checkpoint file.
        out: a folder, or (without a decoder) the encoder's ``.onnx`` file.
        sam_checkpoint: the teacher's checkpoint (released ``sam_vit_*.pth``, ``mobile_sam.pt``,
            ``lite_medsam.pth`` or ``teacher_tiny.pth``) whose prompt encoder and mask decoder to export;
            its input size must be the run's teacher's and its grid the student's.
        opset: ONNX opset, 17 to 20.
    """
    require_onnx("onnx")
    check_opset(opset)
    inputs = [checkpoint.student_path(run)] + ([Path(sam_checkpoint)] if sam_checkpoint is not None else [])
    for written in (Path(out), Path(out) / ENCODER_FILE, Path(out) / DECODER_FILE):
        refuse_input_as_output(written, inputs)  # never overwrite what we read
    student, record = checkpoint.load_student(run)
    sam = decoder_from_checkpoint(sam_checkpoint) if sam_checkpoint is not None else None
    frame = teacher_frame(student, record, sam)
    outputs = onnx_outputs(out, with_decoder=sam is not None)
    export_student_onnx(student, outputs.encoder, opset, frame)
    if sam is not None:
        export_decoder_onnx(sam, outputs.decoder, opset, export_metadata(student, frame))
    return outputs
