"""The models that prompt: the teacher's decoder on stored embeddings and each student's, built once.

The prompt encoder and mask decoder are read from the checkpoint once per command and shared;
:meth:`PromptModels.install` is the prologue every evaluation mode and figure runs per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilesam_srw.sam.predictor import EmbeddingPredictor, decoder_sam, student_embedding
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.shards import ShardSample

TEACHER_RUN = "teacher"


@dataclass
class PromptModels:
    """The teacher's predictor and, per run label, a student with its predictor.

    Args:
        teacher: predicts from the stored teacher embedding.
        students: run label -> (student, predictor whose image encoder is that student).
    """

    teacher: EmbeddingPredictor
    students: dict[str, tuple[SamStudent, EmbeddingPredictor]]

    @classmethod
    def build(cls, decoder: dict[str, torch.Tensor], input_size: int, students: dict[str, SamStudent],
              device: torch.device) -> "PromptModels":
        """Predictors sharing one set of decoder weights ``decoder`` (from ``prompt_and_decoder``)."""
        teacher = EmbeddingPredictor(decoder_sam(decoder, input_size).to(device))
        return cls(teacher, {label: (student.to(device), EmbeddingPredictor(decoder_sam(decoder, input_size, student)
                                                                          .to(device)))
                             for label, student in students.items()})

    def install(self, sample: ShardSample) -> dict[str, EmbeddingPredictor]:
        """Install the sample's stored teacher embedding and each student's embedding of its stored image.

        Returns run label -> predictor, the teacher first (under :data:`TEACHER_RUN`).
        """
        original_size, input_size = tuple(sample.meta["original_size"]), tuple(sample.meta["input_size"])
        self.teacher.set_embedding(torch.from_numpy(sample.embedding), original_size, input_size)
        predictors = {TEACHER_RUN: self.teacher}
        for label, (student, predictor) in self.students.items():
            predictor.set_embedding(student_embedding(student, sample, predictor.device), original_size, input_size)
            predictors[label] = predictor
        return predictors
