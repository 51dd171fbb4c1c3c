"""SAM-family teachers, loaded in one place by role.

- ``spec``: what a registry entry says (sizes, preprocessing, checkpoint, how to recognise and build it).
- ``sam_vit``, ``mobilesam``, ``litemedsam``: the families and their entries (SAM ViT-H/L/B and the tiny
  test SAM; MobileSAM's TinyViT; LiteMedSAM and its released file).
- ``registry``: :data:`TEACHERS`, finding an entry by name, by checkpoint or by a manifest's record.
- ``loading``: :func:`load_teacher` (whole teacher), :func:`decoder_from_record` (prompt encoder and mask
  decoder only), :class:`Teacher`.
- ``shards``: the teacher of a shard folder, from its manifest (:func:`shard_teacher`).
"""

from mobilesam_srw.sam.teachers.loading import (
    Teacher,
    decoder_from_checkpoint,
    decoder_from_record,
    load_teacher,
    teacher_from_record,
    teacher_predictor,
)
from mobilesam_srw.sam.teachers.registry import (
    TEACHERS,
    default_checkpoint,
    resolve_checkpoint,
    spec_from_record,
    teacher_spec,
)
from mobilesam_srw.sam.teachers.shards import ShardTeacher, shard_teacher
from mobilesam_srw.sam.teachers.spec import TeacherSpec

__all__ = [
    "TEACHERS",
    "ShardTeacher",
    "Teacher",
    "TeacherSpec",
    "decoder_from_checkpoint",
    "decoder_from_record",
    "default_checkpoint",
    "load_teacher",
    "resolve_checkpoint",
    "shard_teacher",
    "spec_from_record",
    "teacher_from_record",
    "teacher_predictor",
    "teacher_spec",
]
