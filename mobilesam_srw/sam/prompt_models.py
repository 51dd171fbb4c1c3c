"""The models that prompt: the teacher's decoder on stored embeddings and each student's, built once.

One prompt encoder and mask decoder (the teacher's, from its record:
:meth:`~mobilesam_srw.sam.teachers.shards.ShardTeacher.decoder`) serves every predictor: a
predictor holds only its installed embedding. :meth:`PromptModels.install` is the prologue
every evaluation mode and figure runs per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.predictor import EmbeddingPredictor, student_embedding
from mobilesam_srw.sam.preprocessing import Preprocessing
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.shards import ShardSample

TEACHER_RUN = "teacher"


class NonFiniteEmbedding(SrwError):
    """A sample whose stored teacher embedding (or avesim) or a student's embedding holds NaN or inf.

    Args:
        key: the sample.
        run: :data:`TEACHER_RUN` or the student's run label.
    """

    def __init__(self, key: str, run: str) -> None:
        whose = "the teacher's stored embedding" if run == TEACHER_RUN else f"student {run}'s embedding"
        super().__init__(f"sample {key}: {whose} has NaN or inf values")
        self.key, self.run = key, run

    @property
    def reason(self) -> str:
        """A countable reason, e.g. ``non-finite teacher embedding``."""
        return f"non-finite {self.run} embedding"


@dataclass
class PromptModels:
    """The teacher's predictor and, per run label, a student with its predictor.

    Args:
        teacher: predicts from the stored teacher embedding.
        students: run label -> (student, its predictor).
        preprocessing: the teacher's; students see the stored image through it
            (:func:`~mobilesam_srw.sam.preprocessing.student_input`).
    """

    teacher: EmbeddingPredictor
    students: dict[str, tuple[SamStudent, EmbeddingPredictor]]
    preprocessing: Preprocessing

    @classmethod
    def build(cls, decoder: Sam, students: dict[str, SamStudent], device: torch.device,
              preprocessing: Preprocessing) -> "PromptModels":
        """Predictors sharing the teacher's prompt encoder and mask decoder ``decoder``.

        Args:
            decoder: from the teacher's record, at the teacher's input size; a student of another
                input size gives masks through it too (its embedding is installed in the teacher's frame).
            students: run label -> student.
            device: where every model runs.
            preprocessing: the teacher's.
        """
        decoder = decoder.to(device)
        return cls(EmbeddingPredictor(decoder),
                   {label: (student.to(device).eval(), EmbeddingPredictor(decoder)) for label, student in students.items()},
                   preprocessing)

    def install(self, sample: ShardSample) -> dict[str, EmbeddingPredictor]:
        """Install the sample's stored teacher embedding and each student's embedding of its stored image.

        Returns run label -> predictor, the teacher first (under :data:`TEACHER_RUN`).

        Raises:
            NonFiniteEmbedding: an embedding (or the stored avesim) holds NaN or inf; nothing is decoded from it.
        """
        if not (np.isfinite(sample.embedding).all() and np.isfinite(sample.avesim).all()):
            raise NonFiniteEmbedding(sample.key, TEACHER_RUN)
        original_size, input_size = tuple(sample.meta["original_size"]), tuple(sample.meta["input_size"])
        self.teacher.set_embedding(torch.from_numpy(sample.embedding), original_size, input_size)
        predictors = {TEACHER_RUN: self.teacher}
        for label, (student, predictor) in self.students.items():
            embedding = student_embedding(student, sample, predictor.device, self.preprocessing)
            if not torch.isfinite(embedding).all():
                raise NonFiniteEmbedding(sample.key, label)
            predictor.set_embedding(embedding, original_size, input_size)
            predictors[label] = predictor
        return predictors
