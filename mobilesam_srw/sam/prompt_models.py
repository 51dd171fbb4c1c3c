"""The models that prompt: the teacher's decoder on stored embeddings and each student's, built once.

One prompt encoder and mask decoder (the teacher's, from its record:
:meth:`~mobilesam_srw.sam.teachers.shards.ShardTeacher.decoder`) serves every predictor: a
predictor holds only its installed embedding. :meth:`PromptModels.install` is the prologue
every evaluation mode and figure runs per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn

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

    predictor_class: ClassVar[type] = EmbeddingPredictor  # a teacher family's predictor on given features

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
        return cls(cls.predictor_class(decoder),
                   {label: (student.to(device).eval(), cls.predictor_class(decoder))
                    for label, student in students.items()},
                   preprocessing)

    def install_stored(self, sample: ShardSample) -> None:
        """Install the sample's stored teacher features in the teacher's predictor."""
        original_size, input_size = tuple(sample.meta["original_size"]), tuple(sample.meta["input_size"])
        self.teacher.set_embedding(torch.from_numpy(sample.embedding), original_size, input_size)

    def student_outputs(self, student: nn.Module, sample: ShardSample, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The student's features of the sample's stored image."""
        return (student_embedding(student, sample, device, self.preprocessing),)

    def install_outputs(self, predictor: EmbeddingPredictor, outputs: tuple[torch.Tensor, ...],
                        sample: ShardSample) -> None:
        """Install a student's :meth:`student_outputs` in its predictor."""
        predictor.set_embedding(outputs[0], tuple(sample.meta["original_size"]), tuple(sample.meta["input_size"]))

    def install(self, sample: ShardSample) -> dict[str, EmbeddingPredictor]:
        """Install the sample's stored teacher embedding and each student's embedding of its stored image.

        Returns run label -> predictor, the teacher first (under :data:`TEACHER_RUN`).

        Raises:
            NonFiniteEmbedding: an embedding (or the stored avesim) holds NaN or inf; nothing is decoded from it.
        """
        stored = [sample.embedding, sample.avesim, *sample.maps.values()]
        if not all(np.isfinite(values).all() for values in stored):
            raise NonFiniteEmbedding(sample.key, TEACHER_RUN)
        self.install_stored(sample)
        predictors = {TEACHER_RUN: self.teacher}
        for label, (student, predictor) in self.students.items():
            outputs = self.student_outputs(student, sample, predictor.device)
            if not all(torch.isfinite(output).all() for output in outputs):
                raise NonFiniteEmbedding(sample.key, label)
            self.install_outputs(predictor, outputs, sample)
            predictors[label] = predictor
        return predictors
