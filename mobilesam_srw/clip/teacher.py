"""The CLIP teacher: an open_clip model from a local checkpoint, and its preprocessing split in two.

open_clip's eval preprocessing is ``Resize -> CenterCrop -> convert("RGB") -> ToTensor -> Normalize``
(``open_clip.image_transform_v2``). We keep open_clip's own transforms and cut them before
``ToTensor``: the first part, :class:`PixelTransform`, gives the uint8 pixels the teacher sees (what
precompute stores); the second, :func:`normalize_pixels`, is ``ToTensor``'s ``/255`` and the same
``Normalize``. So ``encode_pixels(model, pixels)`` equals ``model.encode_image(preprocess(image))``
bit for bit on the same device and batch.

Nothing is ever downloaded: the weights come from a local file (open_clip state dict, ``.pt``/
``.pth``/``.bin`` read with ``weights_only=True``, or ``.safetensors``), or the model is random
(for tests and demos only, and its identity says so).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import open_clip
import torch
import torchvision.transforms.functional as TF
from open_clip.transform import MaybeToTensor, PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torchvision.transforms import Compose, Normalize

from mobilesam_srw.atomic import atomic_file, write_failures
from mobilesam_srw.errors import SrwError
from mobilesam_srw.weights import file_sha256

RANDOM_SEED_KEY = "mobilesam_srw_random_seed"
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
# Keys of OpenAI's own CLIP state dicts (its TorchScript release's state_dict()) that open_clip's models lack;
# open_clip drops them when it reads OpenAI's files (``load_openai_model``), which it builds with QuickGELU.
OPENAI_STATE_KEYS = ("input_resolution", "context_length", "vocab_size")
HUB_CONFIG_FILE = "open_clip_config.json"  # beside a checkpoint downloaded from the Hugging Face Hub


@dataclass(frozen=True)
class TeacherIdentity:
    """What makes two teachers give the same embeddings; stored in manifests and cache keys.

    Args:
        name: open_clip model name, e.g. ``ViT-B-32``.
        checkpoint: file name of the local checkpoint, ``None`` for a random model.
        checkpoint_sha256: sha256 of that file, ``None`` for a random model built in memory.
        random_seed: the seed of a random model, also when it was saved by
            :func:`save_teacher_checkpoint` and reloaded; ``None`` for real weights.
        pretrained_tag: open_clip tag whose preprocessing and QuickGELU setting were applied.
        image_size: teacher input ``(H, W)``.
        embed_dim: image (and text) embedding size ``D``.
        mean: per-channel normalisation mean (of pixels in ``[0, 1]``).
        std: per-channel normalisation std.
        interpolation: resize interpolation (``bicubic`` or ``bilinear``).
        resize_mode: ``shortest`` (resize + center crop), ``longest`` (resize + pad) or ``squash``.
        fill_color: padding value of ``longest``.
        quick_gelu: whether the towers use QuickGELU (OpenAI's weights need it).
        open_clip_version: the library version that built the model.
    """

    name: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    random_seed: int | None
    pretrained_tag: str | None
    image_size: tuple[int, int]
    embed_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    fill_color: int
    quick_gelu: bool
    open_clip_version: str

    @property
    def is_random(self) -> bool:
        return self.random_seed is not None

    def describe(self) -> str:
        source = f" from {self.checkpoint} (sha256 {self.checkpoint_sha256[:12]})" if self.checkpoint_sha256 else ""
        if self.is_random:
            return f"{self.name} with RANDOM weights (seed {self.random_seed}){source}, for tests and demos only"
        return f"{self.name}{source}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def preprocess_cfg(self) -> dict[str, Any]:
        """The open_clip ``PreprocessCfg`` fields of this teacher."""
        return {
            "size": self.image_size,
            "mode": "RGB",
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }


@dataclass
class PixelTransform:
    """PIL image (or ``[H, W, 3]`` uint8 array) -> the ``[S, S, 3]`` uint8 RGB pixels the teacher sees.

    open_clip's own transforms up to, not including, ``ToTensor``: resize, crop or pad, RGB
    conversion, in open_clip's order (resizing happens in the image's own mode). Picklable, so it
    runs in DataLoader workers.

    Args:
        transform: the leading part of open_clip's eval ``Compose``.
    """

    transform: Compose

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        pixels = np.array(self.transform(image), dtype=np.uint8)  # a writable copy
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"the pixel transform gave shape {pixels.shape}, not [H, W, 3]")
        return pixels


def split_preprocess(preprocess_cfg: dict[str, Any]) -> tuple[PixelTransform, tuple[float, ...], tuple[float, ...]]:
    """Cut open_clip's eval transform of ``preprocess_cfg`` into pixels and normalisation.

    Args:
        preprocess_cfg: open_clip ``PreprocessCfg`` fields (``open_clip.get_model_preprocess_cfg``).

    Returns:
        The pixel transform, and the ``Normalize`` mean and std that follow ``ToTensor``.
    """
    cfg = PreprocessCfg(**{key: value for key, value in preprocess_cfg.items() if key in PREPROCESS_KEYS})
    steps = list(image_transform_v2(cfg, is_train=False).transforms)
    cut = next((i for i, step in enumerate(steps) if isinstance(step, MaybeToTensor)), None)
    tail = steps[cut:] if cut is not None else []
    if len(tail) != 2 or not isinstance(tail[1], Normalize):
        raise SrwError(f"open_clip's preprocessing changed shape (expected ... ToTensor, Normalize): {steps}")
    normalize = tail[1]
    return PixelTransform(Compose(steps[:cut])), tuple(normalize.mean), tuple(normalize.std)


def pixels_channels_first(pixels: torch.Tensor | np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, 3]`` or ``[B, 3, H, W]`` uint8 -> ``[B, 3, H, W]`` uint8; ``(H, W)`` must be ``image_size``."""
    if isinstance(pixels, np.ndarray) and not pixels.flags.writeable:
        pixels = pixels.copy()
    pixels = torch.as_tensor(pixels)
    if pixels.dtype != torch.uint8 or pixels.ndim != 4:
        raise ValueError(f"pixels must be uint8 [B, H, W, 3] or [B, 3, H, W], got {pixels.dtype} {list(pixels.shape)}")
    height, width = image_size
    if tuple(pixels.shape[1:]) == (height, width, 3):
        return pixels.permute(0, 3, 1, 2)
    if tuple(pixels.shape[1:]) == (3, height, width):
        return pixels
    raise ValueError(f"pixels of shape {list(pixels.shape)} do not match the teacher's {height}x{width} input")


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """open_clip's ``size`` (an int or ``(H, W)``) as ``(H, W)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def normalize_pixels(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``[B, 3, H, W]`` uint8 -> float32, exactly as torchvision's ``ToTensor`` then ``Normalize``."""
    return TF.normalize(pixels.to(torch.float32).div(255), mean=list(mean), std=list(std))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_pixels(model: torch.nn.Module, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Teacher image embeddings ``[B, D]`` float32 (on the model's device) of stored pixels.

    Args:
        model: an open_clip CLIP model; mean, std and input size come from its preprocess config.
        pixels: ``[B, H, W, 3]`` or ``[B, 3, H, W]`` uint8, the output of :class:`PixelTransform`.
    """
    cfg = open_clip.get_model_preprocess_cfg(model)
    batch = pixels_channels_first(pixels, size_pair(cfg["size"])).to(_model_device(model))
    return model.encode_image(normalize_pixels(batch, cfg["mean"], cfg["std"])).float()


@dataclass
class ClipTeacher:
    """An open_clip model in eval mode, its pixel transform, tokenizer and identity.

    Args:
        model: the open_clip ``CLIP`` (parameters frozen).
        pixels: image -> the uint8 pixels the teacher sees.
        tokenizer: the model's open_clip tokenizer.
        identity: what to store in manifests and cache keys.
    """

    model: torch.nn.Module
    pixels: PixelTransform
    tokenizer: Callable
    identity: TeacherIdentity

    @property
    def mean(self) -> tuple[float, ...]:
        return self.identity.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.identity.std

    def encode(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """:func:`encode_pixels` with this teacher's model."""
        return encode_pixels(self.model, pixels)


def check_model_name(name: str) -> dict:
    """The open_clip config of a built-in model name that needs no download to build; else SrwError."""
    config = open_clip.get_model_config(name) if ":" not in name else None
    if config is None:
        raise SrwError(f"unknown open_clip model {name!r} (see open_clip.list_models(); no hf-hub: names)")
    text_cfg = config.get("text_cfg", {})
    needs_hub = [key for key in ("hf_model_name", "hf_tokenizer_name") if text_cfg.get(key)]
    if needs_hub:
        raise SrwError(f"open_clip model {name} needs a Hugging Face download ({needs_hub[0]}); choose a CLIP model")
    return config


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip (it holds compiled ``code/``), which ``weights_only`` cannot read."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in f"/{name}" for name in archive.namelist())


def _summary(error: Exception, max_characters: int = 300) -> str:
    """An error's message on one line, shortened (a strict load lists every missing key)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= max_characters else text[: max_characters - 3] + "..."


def _tag_overrides(name: str, pretrained_tag: str | None) -> tuple[dict, bool]:
    """Preprocessing and QuickGELU of an open_clip tag, read from open_clip's own table (no download)."""
    if pretrained_tag is None:
        return {}, False
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained_tag)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise SrwError(f"open_clip has no tag {pretrained_tag!r} for {name}; its tags: {tags}")
    overrides = {key: tag_cfg[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in tag_cfg}
    return overrides, bool(tag_cfg.get("quick_gelu", False))


def _hub_repo_in_path(checkpoint: Path, repo: str) -> bool:
    """Whether ``checkpoint`` lies in the Hugging Face cache of ``repo`` (``models--org--name/snapshots/...``) or
    in a folder named after it (``huggingface-cli download org/name --local-dir name``)."""
    cached, name = "models--" + repo.replace("/", "--"), repo.rsplit("/", 1)[-1]
    return any(part in (cached, name) for part in checkpoint.resolve().parent.parts)


def _state_keys(checkpoint: Path) -> set[str]:
    """The top-level keys of a checkpoint, read without loading its tensors (empty if it cannot be read so)."""
    try:
        if checkpoint.suffix == ".safetensors":
            with safe_open(str(checkpoint), framework="pt") as opened:
                return set(opened.keys())
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a legacy (non-zip) file or a torn one: open_clip's own load reports it
        return set()
    saved = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    return {key.removeprefix("module.") for key in saved} if isinstance(saved, dict) else set()


def openai_release(name: str, checkpoint: Path | None) -> tuple[str | None, str] | None:
    """Whether ``checkpoint`` holds weights released to run with QuickGELU (OpenAI's CLIP, or another release
    open_clip builds with QuickGELU), as open_clip tells: ``(its open_clip tag or None, the evidence)``, else None.

    Evidence, in order: the file lies in the Hugging Face cache (or a folder named after) a repository that
    open_clip's pretrained table lists for ``name`` with ``quick_gelu``; an ``open_clip_config.json`` beside it
    (a Hub download) says ``quick_gelu``; its keys are OpenAI's own state dict's (:data:`OPENAI_STATE_KEYS`).
    """
    if checkpoint is None:
        return None
    for tag in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, tag)
        repo = (cfg.get("hf_hub") or "").strip("/")
        if cfg.get("quick_gelu") and repo and _hub_repo_in_path(checkpoint, repo):
            return tag, f"it comes from {repo}, open_clip's {name} '{tag}' release"
    hub_config = checkpoint.parent / HUB_CONFIG_FILE
    if hub_config.is_file():
        try:
            config = json.loads(hub_config.read_text())
        except (OSError, ValueError, RecursionError):
            config = None
        model_cfg = config.get("model_cfg", config) if isinstance(config, dict) else None
        if isinstance(model_cfg, dict) and model_cfg.get("quick_gelu") is True:
            return None, f"the {HUB_CONFIG_FILE} beside it says quick_gelu"
    if set(OPENAI_STATE_KEYS) <= _state_keys(checkpoint):
        return ("openai" if "openai" in open_clip.list_pretrained_tags_by_model(name) else None,
                f"it is OpenAI's own state dict ({', '.join(OPENAI_STATE_KEYS)})")
    return None


def _openai_state_dict(checkpoint: Path) -> dict[str, torch.Tensor] | None:
    """OpenAI's own state dict without the keys open_clip's models lack (as open_clip's ``load_openai_model``
    drops them), or None for any other file (open_clip reads those itself)."""
    if not set(OPENAI_STATE_KEYS) <= _state_keys(checkpoint):
        return None
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved = saved.get("state_dict", saved)
    return {key.removeprefix("module."): value for key, value in saved.items()
            if key.removeprefix("module.") not in OPENAI_STATE_KEYS}


def build_clip_teacher(
    name: str,
    checkpoint: str | Path | None = None,
    pretrained_tag: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ClipTeacher:
    """Build an open_clip model from a local checkpoint, or a random one when there is none.

    Args:
        name: a built-in open_clip model name (``ViT-B-32``, ``ViT-B-16``, ...).
        checkpoint: a local open_clip state dict (``.pt``/``.pth``/``.bin`` loaded with
            ``weights_only=True``, or ``.safetensors``); ``None`` builds a RANDOM model.
        pretrained_tag: the open_clip tag the checkpoint was released under (``openai``,
            ``laion2b_s34b_b79k``, ...): its mean/std, resize mode and QuickGELU are applied, as
            ``open_clip.create_model_and_transforms(name, pretrained=tag)`` would. Nothing is downloaded.
            Without it, a checkpoint that open_clip tells is a QuickGELU release (:func:`openai_release`:
            OpenAI's weights) is built with QuickGELU (``<name>-quickgelu``), with one line saying so; a
            tag that says otherwise for such a file is refused.
        seed: initialises a random model (the global RNG is left untouched).
        device: where the model lives.
    """
    model_cfg = check_model_name(name)
    pretrained, state_dict = None, None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise SrwError(f"checkpoint not found: {checkpoint}")
        if _is_torchscript(checkpoint):
            raise SrwError(
                f"{checkpoint.name} is a TorchScript archive (OpenAI's original release), which cannot be read "
                "safely; use open_clip's state-dict release of the same weights (e.g. the Hugging Face repository "
                "timm/vit_base_patch32_clip_224.openai for ViT-B-32) with --pretrained-tag openai"
            )
        pretrained = str(checkpoint.resolve())  # an absolute path is never taken for a tag to download
    preprocess_overrides, quick_gelu = _tag_overrides(name, pretrained_tag)
    release = openai_release(name, checkpoint)
    if release is not None and not (quick_gelu or model_cfg.get("quick_gelu")):
        tag, evidence = release
        if pretrained_tag is not None:
            raise SrwError(f"{checkpoint.name} needs QuickGELU ({evidence}), but --pretrained-tag {pretrained_tag} "
                           f"builds {name} with GELU; pass --pretrained-tag {tag or 'openai'} or --teacher "
                           f"{name}-quickgelu")
        if tag is not None:
            pretrained_tag = tag
            preprocess_overrides, _ = _tag_overrides(name, tag)
        quick_gelu = True
        print(f"note: {checkpoint.name}: {evidence}; building {name} with QuickGELU, as open_clip's "
              f"{name}-quickgelu" + (f" (--pretrained-tag {tag})" if tag else ""), file=sys.stderr)
    quick_gelu = quick_gelu or bool(model_cfg.get("quick_gelu", False))
    if checkpoint is not None and (state_dict := _openai_state_dict(checkpoint)) is not None:
        pretrained = None  # OpenAI's own keys: open_clip's strict load of the file would refuse them
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = open_clip.create_model(
                name,
                pretrained=pretrained,
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=preprocess_overrides,
                pretrained_image=False,
                pretrained_text=False,
                weights_only=True,
                device="cpu",
            )
            if state_dict is not None:
                model.load_state_dict(state_dict, strict=True)
        except Exception as error:  # open_clip and torch raise many types: a torn file, another model's weights
            raise SrwError(f"cannot load {name} from {checkpoint}: {_summary(error)}") from None
    model = model.eval().requires_grad_(False).to(device)
    cfg = open_clip.get_model_preprocess_cfg(model)
    pixel_transform, mean, std = split_preprocess(cfg)
    identity = TeacherIdentity(
        name=name,
        checkpoint=checkpoint.name if checkpoint is not None else None,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint is not None else None,
        random_seed=_saved_random_seed(checkpoint) if checkpoint is not None else seed,
        pretrained_tag=pretrained_tag,
        image_size=size_pair(cfg["size"]),
        embed_dim=int(model.visual.output_dim),
        mean=tuple(float(value) for value in mean),
        std=tuple(float(value) for value in std),
        interpolation=str(cfg["interpolation"]),
        resize_mode=str(cfg["resize_mode"]),
        fill_color=int(cfg["fill_color"]),
        quick_gelu=quick_gelu,
        open_clip_version=open_clip.__version__,
    )
    return ClipTeacher(model, pixel_transform, open_clip.get_tokenizer(name), identity)


def _saved_random_seed(checkpoint: Path) -> int | None:
    """The seed a random teacher saved by :func:`save_teacher_checkpoint` was made with, else ``None``."""
    if checkpoint.suffix != ".safetensors":
        return None
    with safe_open(str(checkpoint), framework="pt") as opened:  # open_clip has just read it
        seed = (opened.metadata() or {}).get(RANDOM_SEED_KEY)
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


def save_teacher_checkpoint(teacher: ClipTeacher, path: Path) -> Path:
    """Write the teacher's weights as an open_clip ``.safetensors`` state dict, atomically.

    A random teacher saved this way and reloaded with :func:`build_clip_teacher` gets a checkpoint
    sha256, so later stages (eval, the classifier cache) rebuild exactly the same model; its seed
    goes into the file's metadata, so the reloaded teacher is still labelled random.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise SrwError(f"a teacher checkpoint is written as .safetensors, not {path.name}")
    state = {key: value.detach().cpu().contiguous() for key, value in teacher.model.state_dict().items()}
    metadata = {"open_clip_model": teacher.identity.name}
    if teacher.identity.random_seed is not None:
        metadata[RANDOM_SEED_KEY] = str(teacher.identity.random_seed)
    with write_failures(path), atomic_file(path) as stream:
        stream.write(safetensors_bytes(state, metadata=metadata))
    return path
