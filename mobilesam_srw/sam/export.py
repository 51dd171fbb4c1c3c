"""``srw-sam export``: a trained student plus the teacher's prompt encoder and mask decoder,
as one MobileSAM checkpoint that ``mobile_sam.sam_model_registry["vit_t"]`` loads strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam

from mobilesam_srw.atomic import refuse_input_as_output
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.mobilesam_format import to_mobilesam
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.sam.teachers import decoder_from_checkpoint
from mobilesam_srw.sam.teachers.loading import prompt_and_decoder
from mobilesam_srw.sam.transforms import INPUT_SIZE, PATCH_SIZE

MOBILESAM_STUDENT = "tinyvit-5m"  # the architecture of MobileSAM's vit_t


def student_sam(student: SamStudent, sam_checkpoint: Path) -> Sam:
    """A segment-anything ``Sam`` whose image encoder is ``student`` and whose prompt encoder and mask
    decoder are those of the teacher checkpoint (SAM, MobileSAM, LiteMedSAM or a tiny teacher:
    :func:`~mobilesam_srw.sam.teachers.decoder_from_checkpoint`), in the teacher's frame."""
    sam = decoder_from_checkpoint(sam_checkpoint)
    size, grid = sam.image_encoder.img_size, tuple(sam.prompt_encoder.image_embedding_size)
    if student.img_size != size or tuple(student.embedding_shape[1:]) != grid:
        raise SrwError(f"the teacher of {Path(sam_checkpoint).name} takes {size} px to a {grid[0]}x{grid[1]} "
                       f"embedding; the student takes {student.img_size} px to "
                       f"{student.embedding_shape[1]}x{student.embedding_shape[2]}")
    sam.image_encoder = student
    return sam.eval()


def check_mobilesam_student(student: SamStudent) -> None:
    """A one-line error unless ``student`` is MobileSAM's vit_t (``tinyvit-5m``, 1024 px, stride 16), the only
    student MobileSAM's code loads; the error says what works instead (ONNX)."""
    if (student.name, student.img_size, student.stride) != (MOBILESAM_STUDENT, INPUT_SIZE, PATCH_SIZE):
        raise SrwError(f"--format pt writes MobileSAM's vit_t ({MOBILESAM_STUDENT} at {INPUT_SIZE} px, stride "
                       f"{PATCH_SIZE}), which MobileSAM's code builds and nothing else; this run's student is "
                       f"{student.name} at {student.img_size} px, stride {student.stride}: export it with --format "
                       "onnx --with-decoder (encoder and the teacher's decoder, run with onnxruntime)")


def export_mobilesam(run: Path, sam_checkpoint: Path, out: Path) -> dict[str, torch.Tensor]:
    """Write ``out``: MobileSAM's ``image_encoder.*`` from the run, the rest from the SAM checkpoint.

    ``out`` may not be one of the inputs (the run's ``student.pt`` or checkpoint, the SAM checkpoint): we
    never overwrite what we read."""
    out = Path(out)
    refuse_input_as_output(out, [checkpoint.student_path(run), Path(sam_checkpoint), Path(run)])
    if out.is_dir():
        raise SrwError(f"--out {out} is a folder; name the checkpoint file to write, e.g. {out / 'mobile_sam_srw.pt'}")
    student, _ = checkpoint.load_student(run)
    check_mobilesam_student(student)
    state = {**to_mobilesam(student), **prompt_and_decoder(sam_checkpoint)}
    checkpoint.save(Path(out), state)
    return state
