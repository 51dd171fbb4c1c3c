"""SAM 2.1 teachers (``sam2.1_hiera_t/s/b+/l``): the ``sam2`` package's own model, preprocessing and targets.

The model is built by ``sam2.build_sam.build_sam2`` from the package's own config (Hiera trunk, FPN
neck, memory modules, prompt encoder, mask decoder; never re-implemented here) and its checkpoint
(``{"model": state dict}``, as Meta publishes it) is read with ``torch.load(weights_only=True)`` and
loaded key for key. Targets are exactly ``SAM2ImagePredictor.set_image``'s ``_features`` (computed by
that predictor's own ``set_image_batch``):

| map | shape | what |
|---|---|---|
| ``image_embed`` (the shard's embedding) | 256 x 64 x 64 | the FPN's stride-16 level plus ``no_mem_embed`` |
| ``high_res_0`` | 32 x 256 x 256 | the stride-4 level after the mask decoder's ``conv_s0`` |
| ``high_res_1`` | 64 x 128 x 128 | the stride-8 level after ``conv_s1`` |

Preprocessing (``sam2``) is ``SAM2Transforms``: the image resized to 1024 x 1024 (not keeping its
aspect ratio; torchvision's antialiased bilinear ``Resize``), then ImageNet's mean and std. The shard
stores the image resized to a longest side of 1024 (as for SAM), and the teacher, the students and
every later stage see that stored image through ``SAM2Transforms``, so a stored sample's targets are
``SAM2ImagePredictor.set_image(stored image)``'s features.

``sam2.1_tiny`` is a random-weight SAM 2.1 whose Hiera trunk is cut down (8 channels, 5 blocks) by
hydra overrides of ``sam2.1_hiera_t``'s config, for tests and demos; every other part is ``hiera_t``'s.

The ``sam2`` package is optional (``pip install "mobilesam-srw[sam2]"``): nothing here imports it until a
SAM 2 teacher is used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.preprocessing import Preprocessing
from mobilesam_srw.sam.teachers.spec import StateDict, TeacherSpec

SAM2_EXTRA = 'pip install "mobilesam-srw[sam2]"'
INPUT_SIZE = 1024  # SAM2Base.image_size of every released config; SAM2ImagePredictor's feature sizes assume it
EMBEDDING_SHAPE = (256, 64, 64)
HIGH_RES_MAPS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("high_res_0", (32, 256, 256)),  # conv_s0 of the stride-4 level
    ("high_res_1", (64, 128, 128)),  # conv_s1 of the stride-8 level
)
TRUNK_PATCH_KEY = "image_encoder.trunk.patch_embed.proj.weight"
TRUNK_BLOCK_PREFIX = "image_encoder.trunk.blocks."
SAM21_KEY = "no_obj_embed_spatial"  # SAM 2.1 has it, SAM 2 does not
PREDICTOR_FEATURE_SIZES = ((256, 256), (128, 128), (64, 64))


def require_sam2() -> None:
    """A one-line :class:`SrwError` saying how to install the ``sam2`` package, unless it imports."""
    try:
        importlib.import_module("sam2.build_sam")
        importlib.import_module("sam2.sam2_image_predictor")
    except ImportError as error:
        raise SrwError(f"SAM 2 teachers need the sam2 package ({error}): {SAM2_EXTRA} "
                       "(it builds from source; its CUDA extension is optional)") from None


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2.1 model: the package's config file, hydra overrides, and its trunk's size for recognising
    a checkpoint.

    Args:
        config: the config name inside the ``sam2`` package.
        overrides: hydra overrides (a cut-down test model).
        trunk_dim: the Hiera trunk's first-stage channels.
        trunk_blocks: its number of blocks.
    """

    config: str
    overrides: tuple[str, ...]
    trunk_dim: int
    trunk_blocks: int


CONFIGS: dict[str, Sam2Config] = {
    "sam2.1_hiera_t": Sam2Config("configs/sam2.1/sam2.1_hiera_t.yaml", (), 96, 12),
    "sam2.1_hiera_s": Sam2Config("configs/sam2.1/sam2.1_hiera_s.yaml", (), 96, 16),
    "sam2.1_hiera_b+": Sam2Config("configs/sam2.1/sam2.1_hiera_b+.yaml", (), 112, 24),
    "sam2.1_hiera_l": Sam2Config("configs/sam2.1/sam2.1_hiera_l.yaml", (), 144, 48),
    "sam2.1_tiny": Sam2Config("configs/sam2.1/sam2.1_hiera_t.yaml", (
        "++model.image_encoder.trunk.embed_dim=8",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    ), 8, 5),
}


def _trunk_size(state_dict: StateDict) -> tuple[int, int] | None:
    patch = state_dict.get(TRUNK_PATCH_KEY)
    if patch is None:
        return None
    blocks = {key[len(TRUNK_BLOCK_PREFIX):].split(".")[0] for key in state_dict if key.startswith(TRUNK_BLOCK_PREFIX)}
    return int(patch.shape[0]), len(blocks)


def describe_sam2(state_dict: StateDict) -> str | None:
    """The SAM 2.1 entry a state dict is, a description of another SAM 2 model, or None if it is none."""
    size = _trunk_size(state_dict)
    if size is None:
        return None
    if SAM21_KEY not in state_dict:
        return "a SAM 2 (not 2.1) checkpoint"
    for name, config in CONFIGS.items():
        if (config.trunk_dim, config.trunk_blocks) == size:
            return name
    return f"a SAM 2.1 Hiera of {size[0]} channels and {size[1]} blocks (no known config)"


def _recognizer(name: str):
    return lambda state_dict: describe_sam2(state_dict) == name


@contextlib.contextmanager
def scripting_quietly() -> Iterator[None]:
    """``SAM2Transforms`` scripts its resize with ``torch.jit.script``, which torch 2.14 warns is deprecated on
    every construction; the warning is the package's, not the user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
        yield


@dataclass(frozen=True)
class Sam2Preprocessing(Preprocessing):
    """``SAM2Transforms`` on the stored image (see the module docstring): the stored frame is SAM's
    (longest side S, padded at the bottom/right in batches), the encoder input the whole image
    resized to S x S, so nothing is padding."""

    name: ClassVar[str] = "sam2"
    pads: ClassVar[bool] = False

    def resize(self, image: np.ndarray) -> np.ndarray:
        return ResizeLongestSide(self.input_size).apply_image(image)

    @functools.cached_property
    def transforms(self) -> nn.Module:
        """``SAM2Transforms(S)``'s resize and normalisation (the package's own module)."""
        require_sam2()
        from sam2.utils.transforms import SAM2Transforms

        with scripting_quietly():
            return SAM2Transforms(resolution=self.input_size, mask_threshold=0.0).transforms

    def __reduce__(self):  # picklable without the scripted module (DataLoader workers)
        return type(self), (self.input_size,)

    def describe(self) -> dict[str, str]:
        return {"resize": "the whole image to input_size x input_size (aspect ratio not kept) with torchvision's "
                          "antialiased bilinear Resize, as sam2.utils.transforms.SAM2Transforms",
                "normalize": "(pixel / 255 - pixel_mean) / pixel_std, RGB",
                "pixel_mean": json.dumps(list(IMAGENET_DEFAULT_MEAN)),
                "pixel_std": json.dumps(list(IMAGENET_DEFAULT_STD)),
                "pad": "none"}

    def normalize_padded(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """Each image cropped to its ``(h, w)``, scaled to [0, 1] as ``ToTensor`` does, then ``SAM2Transforms``."""
        crops = [image[:, :height, :width].float().div(255) for image, (height, width) in zip(images, sizes.tolist())]
        return torch.stack([self.transforms(crop) for crop in crops])


def build_model(spec: TeacherSpec) -> nn.Module:
    """A ``SAM2Base`` of the entry's config with random weights, built by ``sam2.build_sam.build_sam2``
    (as ``SAM2ImagePredictor``'s users build it: with its default post-processing settings), on the CPU,
    in eval mode."""
    require_sam2()
    from sam2.build_sam import build_sam2

    config = CONFIGS[spec.name]
    return build_sam2(config.config, None, device="cpu", hydra_overrides_extra=list(config.overrides)).eval()


def write_random_checkpoint(path: Path | str, name: str = "sam2.1_tiny", seed: int = 0) -> Path:
    """A SAM 2.1 checkpoint of random weights (``{"model": state dict}``, Meta's layout), for tests and the guide."""
    from mobilesam_srw.engine import checkpoint as checkpoint_io

    if name not in CONFIGS:
        raise SrwError(f"unknown SAM 2 entry {name!r}; expected one of {', '.join(CONFIGS)}")
    torch.manual_seed(seed)
    model = build_model(next(spec for spec in SPECS if spec.name == name))
    checkpoint_io.save(Path(path), {"model": model.state_dict()})
    return Path(path)


def read_sam2_state(path: Path) -> StateDict:
    """The ``model`` state dict of a SAM 2 checkpoint file, read with ``weights_only=True``; one line if it
    is not one."""
    from mobilesam_srw.engine import checkpoint as checkpoint_io

    saved = checkpoint_io.load(path)
    state = saved.get("model") if isinstance(saved.get("model"), dict) else saved
    if not state or not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise SrwError(f"{path} holds no state dict of tensors (a SAM 2 checkpoint is {{'model': weights}})")
    return state


def load_checked(spec: TeacherSpec, path: Path) -> nn.Module:
    """``SAM2Base`` of entry ``spec`` with the weights of ``path``: recognised as that entry, then loaded key
    for key (one :class:`SrwError` line otherwise)."""
    from mobilesam_srw.sam.teachers.registry import check_fits
    from mobilesam_srw.sam.teachers.spec import load_part

    require_sam2()
    state = read_sam2_state(path)
    check_fits(spec, state, path)
    model = build_model(spec)
    load_part(model, state, "", path)
    return model.eval()


def load_sam2_teacher(spec: TeacherSpec, path: Path, digest: str):
    """The ``loader`` of the SAM 2 entries: a :class:`~mobilesam_srw.sam.teachers.sam2_teacher.Sam2Teacher`."""
    from mobilesam_srw.sam.teachers.sam2_teacher import Sam2Teacher

    return Sam2Teacher(spec, load_checked(spec, path), Path(path), digest)


class _NoImageEncoder(nn.Module):
    """Stands in for the teacher's image encoder where its features are stored; never runs."""

    def forward(self, images: torch.Tensor) -> dict:
        raise RuntimeError("the teacher's image encoder never runs here: its features are stored")


def decoder_model(spec: TeacherSpec, path: Path) -> nn.Module:
    """The teacher's ``SAM2Base`` without its image encoder (prompt encoder, mask decoder, ``no_mem_embed``),
    for masks from stored or students' features."""
    model = load_checked(spec, path)
    model.image_encoder = _NoImageEncoder()
    return model


def _spec(name: str, checkpoint_name: str, description: str) -> TeacherSpec:
    return TeacherSpec(name, INPUT_SIZE, EMBEDDING_SHAPE, Sam2Preprocessing.name, checkpoint_name, description,
                       recognizes=_recognizer(name), family="sam2", target_maps=HIGH_RES_MAPS,
                       loader=load_sam2_teacher, preprocessing_factory=Sam2Preprocessing, requires=require_sam2)


HIERA_T = _spec("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", "SAM 2.1 Hiera-T (needs the [sam2] extra)")
HIERA_S = _spec("sam2.1_hiera_s", "sam2.1_hiera_small.pt", "SAM 2.1 Hiera-S")
HIERA_B_PLUS = _spec("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", "SAM 2.1 Hiera-B+")
HIERA_L = _spec("sam2.1_hiera_l", "sam2.1_hiera_large.pt", "SAM 2.1 Hiera-L")
TINY = _spec("sam2.1_tiny", "sam2.1_tiny.pt", "a small random SAM 2.1 (tests, demo)")
SPECS = (HIERA_T, HIERA_S, HIERA_B_PLUS, HIERA_L, TINY)
