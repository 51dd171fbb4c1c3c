"""``srw-sam export``: a trained student plus the teacher's prompt encoder and mask decoder,
as one MobileSAM checkpoint that ``mobile_sam.sam_model_registry["vit_t"]`` loads strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.mobilesam_format import to_mobilesam
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.sam.transforms import PATCH_SIZE
from mobilesam_srw.sam.teacher import SAM_CONFIGS, build_sam, prompt_and_decoder, sam_config_from_dict

MOBILESAM_STUDENT = "tinyvit-5m"  # the architecture of MobileSAM's vit_t


def student_sam(student: SamStudent, sam_checkpoint: Path) -> Sam:
    """A segment-anything ``Sam`` whose image encoder is ``student`` (our own MobileSAM)."""
    saved = checkpoint.load(sam_checkpoint)
    if isinstance(saved, dict) and "sam_config" in saved:
        config = sam_config_from_dict(saved["sam_config"])
    else:
        config = SAM_CONFIGS["vit_b"]  # prompt encoder and decoder are the same for every released SAM
    if config.image_size != student.img_size or student.stride != config.patch_size:
        raise SrwError(f"the teacher's input is {config.image_size} px at stride {config.patch_size}; the student's "
                       f"is {student.img_size} px at stride {student.stride}")
    sam = build_sam(config)
    sam.image_encoder = student
    sam.load_state_dict({**{f"image_encoder.{k}": v for k, v in student.state_dict().items()},
                         **prompt_and_decoder(sam_checkpoint)})
    return sam.eval()


def export_mobilesam(run: Path, sam_checkpoint: Path, out: Path) -> dict[str, torch.Tensor]:
    """Write ``out``: MobileSAM's ``image_encoder.*`` from the run, the rest from the SAM checkpoint."""
    student, _ = checkpoint.load_student(run)
    if student.name != MOBILESAM_STUDENT or student.stride != PATCH_SIZE:
        raise SrwError(f"MobileSAM's vit_t is {MOBILESAM_STUDENT} at stride {PATCH_SIZE}; this run's student is "
                       f"{student.name} at stride {student.stride}")
    state = {**to_mobilesam(student), **prompt_and_decoder(sam_checkpoint)}
    checkpoint.save(Path(out), state)
    return state
