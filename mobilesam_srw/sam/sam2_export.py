"""A SAM 2 student for use: SAM 2's own ``SAM2Base`` whose image encoder is the student, as one checkpoint and
a builder, and the student alone as ONNX.

:func:`student_model` puts the student in the teacher's ``SAM2Base`` (its config and checkpoint): the
student's ``high_res_0``, ``high_res_1`` and ``image_embed - no_mem_embed`` become the image encoder's
three FPN levels (positional encodings from the teacher's own ``PositionEmbeddingSine``), the mask
decoder's ``conv_s0``/``conv_s1`` become identities (the student gives their outputs), and
``SAM2ImagePredictor.set_image`` adds ``no_mem_embed`` back, so the package's own predictor (and its
automatic mask generator) runs on the student unchanged: its ``_features`` are the student's maps.

:func:`export_sam2` writes ``{"model": that SAM2Base's state dict, "sam2_student": what rebuilds it}``;
:func:`build_student_model` and :func:`student_predictor` read it back (``torch.load(weights_only=True)``,
key for key). :func:`export_sam2_onnx` writes the student: input ``images`` ``[batch, 3, 1024, 1024]`` float32
(``SAM2Transforms``' output: the image resized to 1024 x 1024, ImageNet mean and std), outputs
``image_embed`` ``[batch, 256, 64, 64]``, ``high_res_0`` ``[batch, 32, 256, 256]``, ``high_res_1``
``[batch, 64, 128, 128]``: ``SAM2ImagePredictor``'s ``_features``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mobilesam_srw.engine import checkpoint as checkpoint_io
from mobilesam_srw.errors import SrwError
from mobilesam_srw.onnx_export import DEFAULT_OPSET, check_opset, export_onnx, require_onnx
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.sam2_student import FAMILY, OUTPUT_NAMES, Sam2Student, build_sam2_student
from mobilesam_srw.sam.teachers import teacher_spec
from mobilesam_srw.sam.teachers.sam2 import build_model, load_checked, scripting_quietly
from mobilesam_srw.sam.teachers.spec import load_part

RECORD_KEY = "sam2_student"


class StudentImageEncoder(nn.Module):
    """A SAM 2 student in the place of ``SAM2Base.image_encoder`` (see the module docstring).

    Args:
        student: gives ``(image_embed, high_res_0, high_res_1)``.
        position_encoding: the teacher neck's ``PositionEmbeddingSine``.
        no_mem_embed: the teacher's ``[1, 1, 256]``, which the predictor adds to the embedding.
    """

    def __init__(self, student: Sam2Student, position_encoding: nn.Module, no_mem_embed: torch.Tensor) -> None:
        super().__init__()
        self.student = student
        self.position_encoding = position_encoding
        self.register_buffer("no_mem_embed", no_mem_embed.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> dict:
        embed, high_res_0, high_res_1 = self.student(images)
        levels = [high_res_0, high_res_1, embed - self.no_mem_embed]
        positions = [self.position_encoding(level).to(level.dtype) for level in levels]
        return {"vision_features": levels[-1], "vision_pos_enc": positions, "backbone_fpn": levels}


def install_student(model: nn.Module, student: Sam2Student) -> nn.Module:
    """``model`` (a ``SAM2Base``) with ``student`` as its image encoder and identity ``conv_s0``/``conv_s1``."""
    model.image_encoder = StudentImageEncoder(student, model.image_encoder.neck.position_encoding, model.no_mem_embed)
    model.sam_mask_decoder.conv_s0 = nn.Identity()
    model.sam_mask_decoder.conv_s1 = nn.Identity()
    return model.eval()


def _teacher_name(record: dict) -> str:
    teacher = (record.get("teacher") or {}).get("type")
    if not teacher or teacher_spec(teacher).family != FAMILY:
        raise SrwError(f"the run's student was not distilled from a SAM 2 teacher (its record names {teacher!r})")
    return teacher


def student_model(run: Path, sam_checkpoint: Path) -> tuple[nn.Module, dict]:
    """The teacher's ``SAM2Base`` (from ``sam_checkpoint``, which must be the run teacher's entry) with the
    run's student as its image encoder, and the record that rebuilds it."""
    student, record = load_student(run)
    if record.get("family") != FAMILY:
        raise SrwError(f"{run}: not a SAM 2 student (export it without SAM 2's exporter)")
    teacher = _teacher_name(record)
    expected = record["teacher"].get("checkpoint_sha256")
    if expected is not None:
        from mobilesam_srw.weights import file_sha256

        if file_sha256(sam_checkpoint) != expected:
            raise SrwError(f"{sam_checkpoint} is not the {teacher} checkpoint the run was distilled from "
                           f"({record['teacher'].get('checkpoint')})")
    model = install_student(load_checked(teacher_spec(teacher), Path(sam_checkpoint)), student)
    return model, {"teacher": teacher, "student": student.name, "img_size": student.img_size}


def export_sam2(run: Path, sam_checkpoint: Path, out: Path) -> Path:
    """Write ``out``: the SAM 2 model of :func:`student_model`, loadable by :func:`build_student_model`."""
    model, rebuild = student_model(run, sam_checkpoint)
    checkpoint_io.save(Path(out), {"model": model.state_dict(), RECORD_KEY: rebuild})
    return Path(out)


def build_student_model(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The ``SAM2Base`` with the student image encoder that :func:`export_sam2` wrote, in eval mode."""
    saved = checkpoint_io.load(path)
    rebuild = saved.get(RECORD_KEY)
    if not isinstance(rebuild, dict) or not isinstance(saved.get("model"), dict):
        raise SrwError(f"{path} is not a SAM 2 student of srw-sam export (no {RECORD_KEY!r} record)")
    spec = teacher_spec(rebuild["teacher"])
    model = install_student(build_model(spec), build_sam2_student(rebuild["student"], rebuild["img_size"]))
    load_part(model, saved["model"], "", path)
    return model.to(device).eval()


def student_predictor(path: Path, device: torch.device | str = "cpu", **predictor_options):
    """A ``SAM2ImagePredictor`` (the ``sam2`` package's own) on :func:`build_student_model` of ``path``."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    with scripting_quietly():
        return SAM2ImagePredictor(build_student_model(path, device), **predictor_options)


def export_sam2_onnx(run: Path, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """The run's SAM 2 student as ONNX (see the module docstring); ``path`` a ``.onnx`` file or a folder
    (``encoder.onnx`` in it)."""
    require_onnx("onnx")
    check_opset(opset)
    student, record = load_student(run)
    if record.get("family") != FAMILY:
        raise SrwError(f"{run}: not a SAM 2 student")
    path = Path(path)
    if path.suffix != ".onnx":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "encoder.onnx"
    example = {"images": torch.randn(1, 3, student.img_size, student.img_size)}
    batch = {0: "batch"}
    return export_onnx(student, example, list(OUTPUT_NAMES), path, opset,
                       dynamic_axes={"images": batch, **{name: batch for name in OUTPUT_NAMES}})
