"""segment-anything's SAM: the released ViT-H/L/B teachers and the small random ``tiny`` SAM, on its own classes.

``vit_h``, ``vit_l`` and ``vit_b`` are the released models (1024 px input, 256 x 64 x 64 embeddings);
``tiny`` is a small random-initialised SAM for demos and tests, built from the same classes, whose
weights and config are saved beside the shards so later stages rebuild it exactly. The prompt encoder
and mask decoder are the same for every SAM-family teacher (:func:`prompt_encoder_and_decoder`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw.atomic import atomic_file, write_failures
from mobilesam_srw.engine import checkpoint as checkpoint_io
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.teachers.spec import StateDict, TeacherSpec, load_part
from mobilesam_srw.sam.transforms import EMBEDDING_DIM, INPUT_SIZE, PATCH_SIZE, PIXEL_MEAN, PIXEL_STD

ENCODER = "image_encoder."
TINY_TEACHER_FILE = "teacher_tiny.pth"


@dataclass(frozen=True)
class SamConfig:
    """Architecture of a SAM, as segment-anything's ``build_sam.py`` builds it.

    Args:
        encoder_embed_dim: ViT width.
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per block.
        encoder_global_attn_indexes: blocks with global (not windowed) attention.
        image_size: square encoder input in pixels.
        patch_size: ViT patch size; the embedding is ``image_size / patch_size`` on a side.
        window_size: windowed-attention size.
        embedding_dim: channels of the image embedding (SAM: 256).
    """

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = INPUT_SIZE
    patch_size: int = PATCH_SIZE
    window_size: int = 14
    embedding_dim: int = EMBEDDING_DIM

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return (self.embedding_dim, self.embedding_size, self.embedding_size)


SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "tiny": SamConfig(64, 2, 2, (1,), image_size=256, window_size=8),
}


def build_image_encoder(config: SamConfig) -> ImageEncoderViT:
    """A randomly initialised SAM ViT image encoder of ``config`` (segment-anything's ``_build_sam``)."""
    return ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.embedding_dim,
    )


def prompt_encoder_and_decoder(input_size: int, embedding_shape: Sequence[int]) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (segment-anything's ``_build_sam``) for an input of
    ``input_size`` pixels and a ``(C, H, W)`` embedding; randomly initialised."""
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


def build_sam(config: SamConfig) -> Sam:
    """A randomly initialised ``Sam`` of ``config``, in eval mode (segment-anything's ``_build_sam``)."""
    prompt_encoder, mask_decoder = prompt_encoder_and_decoder(config.image_size, config.embedding_shape)
    sam = Sam(build_image_encoder(config), prompt_encoder, mask_decoder, pixel_mean=list(PIXEL_MEAN),
              pixel_std=list(PIXEL_STD))
    return sam.eval()


def _vit_shape(state_dict: StateDict) -> tuple[int, int] | None:
    """(width, depth) of a state dict's SAM ViT image encoder; None without one."""
    pos_embed = state_dict.get(f"{ENCODER}pos_embed")
    if pos_embed is None:
        return None
    depth = len({key.split(".")[2] for key in state_dict if key.startswith(f"{ENCODER}blocks.")})
    return pos_embed.shape[-1], depth


def describe_vit(state_dict: StateDict) -> str:
    """A description of what a state dict that no registry entry recognises holds (for messages)."""
    shape = _vit_shape(state_dict)
    if shape is None:
        return f"no SAM model (it has no {ENCODER}pos_embed)"
    return f"a SAM ViT of width {shape[0]} and depth {shape[1]}"


def _released_vit(name: str, checkpoint_name: str, description: str) -> TeacherSpec:
    config = SAM_CONFIGS[name]

    def recognizes(state_dict: StateDict) -> bool:
        return _vit_shape(state_dict) == (config.encoder_embed_dim, config.encoder_depth)

    def build_encoder(state_dict: StateDict) -> ImageEncoderViT:
        encoder = build_image_encoder(config)
        load_part(encoder, state_dict, ENCODER, checkpoint_name)
        return encoder

    return TeacherSpec(name, config.image_size, config.embedding_shape, "sam", checkpoint_name, description,
                       recognizes, build_encoder, sam_family=True)


VIT_H = _released_vit("vit_h", "sam_vit_h_4b8939.pth", "SAM ViT-H (the paper's teacher)")
VIT_L = _released_vit("vit_l", "sam_vit_l_0b3195.pth", "SAM ViT-L")
VIT_B = _released_vit("vit_b", "sam_vit_b_01ec64.pth", "SAM ViT-B")


# The tiny teacher: a random SAM whose own file holds its config (--image-size chooses its input size), so it
# is read by read_tiny_teacher, never recognised or built from a state dict.
TINY = TeacherSpec("tiny", SAM_CONFIGS["tiny"].image_size, SAM_CONFIGS["tiny"].embedding_shape, "sam",
                   TINY_TEACHER_FILE, "a small random SAM for tests and the demo", sam_family=True)


def tiny_spec(config: SamConfig) -> TeacherSpec:
    """The ``tiny`` entry at the sizes of a tiny teacher's ``config``."""
    return replace(TINY, input_size=config.image_size, embedding_shape=config.embedding_shape)


def save_tiny_teacher(sam: Sam, config: SamConfig, path: Path) -> None:
    """Save a tiny teacher's weights with its config, atomically."""
    with write_failures(path), atomic_file(Path(path)) as stream:
        torch.save({"sam_config": dataclasses.asdict(config), "model": sam.state_dict()}, stream)


def sam_config_from_dict(values: dict) -> SamConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`SamConfig` (JSON turns tuples into lists)."""
    return SamConfig(**{**values, "encoder_global_attn_indexes": tuple(values["encoder_global_attn_indexes"])})


def is_tiny_teacher_file(saved: object) -> bool:
    """Whether a loaded checkpoint is a tiny teacher's file (it carries its ``sam_config``)."""
    return isinstance(saved, dict) and "sam_config" in saved


def read_tiny_teacher(path: Path) -> tuple[Sam, SamConfig]:
    """A tiny teacher saved by :func:`save_tiny_teacher`, and its config."""
    saved = checkpoint_io.load(path)
    if not is_tiny_teacher_file(saved):
        raise SrwError(f"{path} is not a tiny-teacher file written by precompute (no sam_config)")
    config = sam_config_from_dict(saved["sam_config"])
    sam = build_sam(config)
    sam.load_state_dict(saved["model"])
    return sam.eval(), config


def load_tiny_teacher(path: Path) -> Sam:
    return read_tiny_teacher(path)[0]


def resize_longest_side(image: np.ndarray, image_size: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> longest side ``image_size``, as ``SamPredictor.set_image``."""
    return ResizeLongestSide(image_size).apply_image(image)


def preprocess(sam: Sam, resized_images: Sequence[np.ndarray]) -> torch.Tensor:
    """Resized ``[h, w, 3]`` uint8 images -> ``[B, 3, S, S]`` normalised and padded bottom/right.

    The same steps as ``SamPredictor.set_image`` then ``set_torch_image`` (``Sam.preprocess``).
    """
    device = sam.pixel_mean.device
    batch = [
        sam.preprocess(torch.as_tensor(image, device=device).permute(2, 0, 1).contiguous()[None].float())
        for image in resized_images
    ]
    return torch.cat(batch)


@torch.no_grad()
def image_embeddings(sam: Sam, resized_images: Sequence[np.ndarray]) -> torch.Tensor:
    """``[B, 256, S/16, S/16]`` float32 teacher embeddings of already resized images."""
    return sam.image_encoder(preprocess(sam, resized_images)).float()
