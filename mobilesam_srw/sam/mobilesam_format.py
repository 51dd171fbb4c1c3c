"""MobileSAM's checkpoint layout (``mobile_sam.pt``) for our TinyViT students.

MobileSAM's TinyViT (``tiny_vit_sam.py``) and timm's differ only in names: MobileSAM's
``layers.i.downsample`` (end of stage i) is timm's ``stages.(i+1).downsample`` (start of
stage i+1), its conv-BN pairs call the conv ``c`` where timm says ``conv``, and its patch
embedding is ``seq.0/seq.2`` for timm's ``conv1/conv2``. MobileSAM also carries an unused
classifier (``norm_head``, ``head``), written here as identity/zero weights.
"""

from __future__ import annotations

import re

import torch

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.student import SamStudent

ENCODER_PREFIX = "image_encoder."
_PATCH_EMBED = {"conv1": "seq.0", "conv2": "seq.2"}
_CLASSIFIER_OUT = 1000  # MobileSAM builds TinyViT with num_classes=1000


def _rename_conv(parts: list[str], old: str, new: str) -> list[str]:
    return [new if part == old else part for part in parts]


def _to_mobilesam_key(key: str) -> str:
    if key.startswith("neck."):
        return key
    if not key.startswith("backbone."):
        raise SrwError(f"not a TinyViT student key: {key}")
    key = key[len("backbone."):]
    if match := re.match(r"patch_embed\.(conv[12])\.(.*)", key):
        key = f"patch_embed.{_PATCH_EMBED[match.group(1)]}.{match.group(2)}"
    elif match := re.match(r"stages\.(\d+)\.downsample\.(.*)", key):
        key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
    else:
        key = re.sub(r"^stages\.", "layers.", key)
    return ".".join(_rename_conv(key.split("."), "conv", "c"))


def _from_mobilesam_key(key: str) -> str | None:
    if key.startswith(("norm_head.", "head.")):
        return None
    if key.startswith("neck."):
        return key
    key = ".".join(_rename_conv(key.split("."), "c", "conv"))
    if match := re.match(r"patch_embed\.seq\.([02])\.(.*)", key):
        name = {"0": "conv1", "2": "conv2"}[match.group(1)]
        key = f"patch_embed.{name}.{match.group(2)}"
    elif match := re.match(r"layers\.(\d+)\.downsample\.(.*)", key):
        key = f"stages.{int(match.group(1)) + 1}.downsample.{match.group(2)}"
    else:
        key = re.sub(r"^layers\.", "stages.", key)
    return f"backbone.{key}"


def _check_tinyvit(student: SamStudent) -> None:
    if not student.name.startswith("tinyvit-"):
        raise SrwError(f"MobileSAM's checkpoint format holds TinyViT students, not {student.name}")


def to_mobilesam(student: SamStudent) -> dict[str, torch.Tensor]:
    """The student's weights under MobileSAM's ``image_encoder.*`` keys (classifier included)."""
    _check_tinyvit(student)
    state = {ENCODER_PREFIX + _to_mobilesam_key(k): v for k, v in student.state_dict().items()}
    channels = student.neck[0].in_channels
    state[ENCODER_PREFIX + "norm_head.weight"] = torch.ones(channels)
    state[ENCODER_PREFIX + "norm_head.bias"] = torch.zeros(channels)
    state[ENCODER_PREFIX + "head.weight"] = torch.zeros(_CLASSIFIER_OUT, channels)
    state[ENCODER_PREFIX + "head.bias"] = torch.zeros(_CLASSIFIER_OUT)
    return state


def from_mobilesam(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our student keys from a MobileSAM state dict (full ``mobile_sam.pt`` or encoder only)."""
    if any(key.startswith(ENCODER_PREFIX) for key in state_dict):
        state_dict = {k[len(ENCODER_PREFIX):]: v for k, v in state_dict.items() if k.startswith(ENCODER_PREFIX)}
    converted = {}
    for key, value in state_dict.items():
        new_key = _from_mobilesam_key(key)
        if new_key is not None:
            converted[new_key] = value
    return converted


def load_mobilesam_into(student: SamStudent, state_dict: dict[str, torch.Tensor]) -> None:
    """Load MobileSAM weights into ``student`` strictly; a mismatch is one clear line."""
    _check_tinyvit(student)
    load_exactly(student, from_mobilesam(state_dict), f"MobileSAM weights do not fit {student.name}")


def load_exactly(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state_dict`` into ``module`` key for key and shape for shape; a mismatch is one
    :class:`SrwError` line starting with ``what``."""
    expected = module.state_dict().keys()
    missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise SrwError(f"{what}: {len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                       f"(e.g. {unexpected[:2]})")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # a shape mismatch
        raise SrwError(f"{what}: {str(error).splitlines()[1].strip()}") from None
