"""The SAM teacher: segment-anything's own model classes, checkpoints and preprocessing.

``vit_h``, ``vit_l`` and ``vit_b`` are the released models (1024 px input, 256 x 64 x 64
embeddings); ``tiny`` is a small random-initialised SAM for demos and tests, built from
the same classes, whose weights and config are saved so later stages rebuild it exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.transforms import PIXEL_MEAN, PIXEL_STD


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
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    embedding_dim: int = 256

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

TINY_TEACHER_FILE = "teacher_tiny.pth"


def build_sam(config: SamConfig) -> Sam:
    """A randomly initialised ``Sam`` of ``config``, in eval mode (segment-anything's ``_build_sam``)."""
    embedding_size = config.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
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
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.embedding_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=config.embedding_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=config.embedding_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


def file_sha256(path: Path, chunk_bytes: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def guess_sam_type(state_dict: dict[str, torch.Tensor]) -> str:
    """Name the model a state dict looks like: ``vit_h/l/b``, ``vit_t`` (MobileSAM), or a description."""
    if any(key.startswith("image_encoder.layers.") for key in state_dict):
        return "vit_t (a MobileSAM TinyViT)"
    pos_embed = state_dict.get("image_encoder.pos_embed")
    if pos_embed is None:
        return "no SAM model (it has no image_encoder.pos_embed)"
    depth = len({key.split(".")[2] for key in state_dict if key.startswith("image_encoder.blocks.")})
    for name, config in SAM_CONFIGS.items():
        if (config.encoder_embed_dim, config.encoder_depth) == (pos_embed.shape[-1], depth) and name != "tiny":
            return name
    return f"a SAM ViT of width {pos_embed.shape[-1]} and depth {depth}"


def _read_checkpoint(path: Path) -> dict:
    """A checkpoint's dict (``weights_only``); a torn download, another format or a pickle that needs code
    is one line."""
    from mobilesam_srw.engine.checkpoint import load

    return load(path)


def load_sam(teacher_type: str, checkpoint: Path) -> Sam:
    """Build ``teacher_type`` and load the checkpoint strictly; a mismatch names what it looks like."""
    if teacher_type == "tiny":
        return load_tiny_teacher(checkpoint)
    if teacher_type not in SAM_CONFIGS:
        raise SrwError(f"unknown teacher type {teacher_type!r}; expected one of {', '.join(SAM_CONFIGS)}")
    state_dict = _read_checkpoint(checkpoint)
    looks_like = guess_sam_type(state_dict)
    if looks_like != teacher_type:
        raise SrwError(f"checkpoint {checkpoint.name} does not fit teacher {teacher_type}: it looks like {looks_like}")
    sam = build_sam(SAM_CONFIGS[teacher_type])
    sam.load_state_dict(state_dict)
    return sam


PROMPT_AND_DECODER = ("prompt_encoder.", "mask_decoder.")


def teacher_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A SAM checkpoint's state dict: a released ``sam_vit_*.pth`` or our ``teacher_tiny.pth``."""
    saved = _read_checkpoint(Path(path))
    return saved["model"] if isinstance(saved, dict) and "sam_config" in saved else saved


def prompt_and_decoder(path: Path) -> dict[str, torch.Tensor]:
    """The prompt encoder and mask decoder weights of a SAM checkpoint (read it once per command)."""
    saved = teacher_state_dict(path)
    state = {k: v for k, v in saved.items() if k.startswith(PROMPT_AND_DECODER)} if isinstance(saved, dict) else {}
    if not state:
        raise SrwError(f"{path} holds no prompt_encoder/mask_decoder weights (not a SAM checkpoint?)")
    return state


def save_tiny_teacher(sam: Sam, config: SamConfig, path: Path) -> None:
    """Save a tiny teacher's weights with its config, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"sam_config": dataclasses.asdict(config), "model": sam.state_dict()}, temporary)
    temporary.replace(path)


def sam_config_from_dict(values: dict) -> SamConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`SamConfig` (JSON turns tuples into lists)."""
    return SamConfig(**{**values, "encoder_global_attn_indexes": tuple(values["encoder_global_attn_indexes"])})


def read_tiny_teacher(path: Path) -> tuple[Sam, SamConfig]:
    """A tiny teacher saved by :func:`save_tiny_teacher`, and its config."""
    saved = _read_checkpoint(path)
    if not isinstance(saved, dict) or "sam_config" not in saved:
        raise SrwError(f"{path} is not a tiny-teacher file written by precompute (no sam_config)")
    config = sam_config_from_dict(saved["sam_config"])
    sam = build_sam(config)
    sam.load_state_dict(saved["model"])
    return sam, config


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
