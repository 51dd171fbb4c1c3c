"""The SAM task for SAM 2 teachers: a :class:`~mobilesam_srw.sam.sam2_student.Sam2Student` learns the three
stored maps (:mod:`~mobilesam_srw.sam.sam2_loss`), everything else as :class:`~mobilesam_srw.sam.task.SamTask`.

The student sees the stored image through the teacher's ``SAM2Transforms`` (1024 x 1024, ImageNet
statistics), as the teacher did; SRW weighs each image's 64 x 64 patches by their stored avesim (Eq. 4-6).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mobilesam_srw.engine import Losses
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.data import embedding_statistics
from mobilesam_srw.sam.mobilesam_format import from_mobilesam, load_exactly
from mobilesam_srw.sam.preprocessing import student_input
from mobilesam_srw.sam.sam2_loss import Sam2LossOptions, sam2_terms
from mobilesam_srw.sam.sam2_student import FAMILY, Sam2Student, build_sam2_student
from mobilesam_srw.sam.student import match_output_statistics
from mobilesam_srw.sam.task import STATISTICS_SAMPLES, SamTask, SamTrainConfig


def init_student(student: Sam2Student, path: Path) -> None:
    """``--init``: a SAM 2 student's run folder or file (every weight), or MobileSAM's checkpoint for a TinyViT
    student (its trunk and SAM's neck, which is the student's embedding head; the high-resolution layers keep
    their initialisation). Anything else is one line."""
    record = checkpoint.load(path / checkpoint.STUDENT_FILE if path.is_dir() else path)
    if record.get("family") == FAMILY and "model" in record:
        load_exactly(student, record["model"], f"--init {path}: its weights do not fit {student.name}")
        return
    if "student" in record:
        raise SrwError(f"--init {path}: a student of a SAM-family teacher; a SAM 2 student starts from a SAM 2 run "
                       "or from MobileSAM's mobile_sam.pt")
    if not student.name.startswith("tinyvit-"):
        raise SrwError(f"--init {path}: MobileSAM's weights are a TinyViT's, not {student.name}'s")
    converted = from_mobilesam(record)
    for prefix, module in (("backbone.", student.backbone.trunk), ("neck.", student.neck)):
        load_exactly(module, {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)},
                     f"--init {path}: MobileSAM weights do not fit {student.name}")


class Sam2Task(SamTask):
    """Distil a SAM 2 teacher's stored image embedding and high-resolution maps."""

    def __init__(self, config: SamTrainConfig) -> None:
        super().__init__(config)
        if self.teacher.spec.family != FAMILY:
            raise SrwError(f"the shards were made by {self.teacher.name}, not a SAM 2 teacher")
        if config.ignore_padding:
            raise SrwError("--ignore-padding: a SAM 2 teacher's input is the whole image resized to 1024 x 1024, "
                           "without padding")
        self.maps = tuple(name for name, _ in self.teacher.spec.target_maps)
        config.RUN_FIELDS = type(config).RUN_FIELDS + Sam2LossOptions.SAM2_RUN_FIELDS  # --resume checks them too

    def build_student(self) -> Sam2Student:
        student = build_sam2_student(self.config.student, self.student_size)
        if self.config.init:
            init_student(student, Path(self.config.init))
        elif self.config.output_init == "teacher-stats":
            match_output_statistics(student, *embedding_statistics(self.train_dataset(), STATISTICS_SAMPLES))
        return student

    def losses(self, model: nn.Module, batch: dict, targets, epoch: int) -> Losses:
        images = student_input(self.preprocessing, batch["image"], batch["size"], self.student_size)
        predicted = tuple(output.float() for output in model(images))
        distill, extra, metrics = sam2_terms(predicted, batch, self.config)
        return Losses(distill=distill, extra=extra, metrics=metrics)

    def checkpoint_extra(self, module: Sam2Student) -> dict:
        return {"student": module.name, "img_size": module.img_size, "family": FAMILY}

    def student_record(self, module: Sam2Student) -> dict:
        return {**checkpoint.student_record(module, loss=self.config.loss, teacher=self.teacher.record),
                "family": FAMILY, "high_res_loss": self.config.high_res_loss,
                "high_res_weights": [self.config.high_res_0_weight, self.config.high_res_1_weight]}

    def describe(self) -> str:
        return (f"SAM 2, teacher {self.teacher.name} (1024 px, sam2 preprocessing), student {self.config.student}, "
                f"loss {self.config.loss}, high-resolution maps {self.config.high_res_loss} x "
                f"({self.config.high_res_0_weight:g}, {self.config.high_res_1_weight:g})")
