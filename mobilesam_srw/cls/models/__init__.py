"""Classification models with mdistiller's names and state-dict layouts.

Every model's ``forward(x)`` returns ``(logits, features)``; ``features`` is a dict with
``"feats"`` (the stage features as mdistiller lists them, so FitNet's hint layer 2 is
``feats[2]``), ``"pooled_feat"`` (the pooled penultimate feature ``[B, D]``) and, as in mdistiller,
``"preact_feats"`` (the stage features before their last ReLU) for all but MobileNetV2 and the
ImageNet ResNets. Pooling is global (``adaptive_avg_pool2d``), which is what mdistiller's fixed
pools compute at 32 px (CIFAR) and 224 px (ImageNet); other sizes also work.

Two families, chosen by the data set: ``"cifar"`` (32 px inputs) and ``"imagenet"`` (224 px).
``ResNet18`` and ``ResNet50`` exist in both, with different architectures, as in mdistiller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from mobilesam_srw.cls.models import (
    digits_cnn,
    imagenet,
    mobilenetv2,
    resnet,
    resnetv2,
    shufflenet_v1,
    shufflenet_v2,
    vgg,
    wrn,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.weights import load_weights
from mobilesam_srw.weights import load_weights_file as load_teacher_checkpoint

CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet8": resnet.resnet8,
    "resnet14": resnet.resnet14,
    "resnet20": resnet.resnet20,
    "resnet32": resnet.resnet32,
    "resnet44": resnet.resnet44,
    "resnet56": resnet.resnet56,
    "resnet110": resnet.resnet110,
    "resnet8x4": resnet.resnet8x4,
    "resnet32x4": resnet.resnet32x4,
    "ResNet18": resnetv2.ResNet18,
    "ResNet50": resnetv2.ResNet50,
    "wrn_16_1": wrn.wrn_16_1,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_1": wrn.wrn_40_1,
    "wrn_40_2": wrn.wrn_40_2,
    "vgg8": vgg.vgg8,
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "MobileNetV2": mobilenetv2.mobile_half,
    "ShuffleV1": shufflenet_v1.ShuffleV1,
    "ShuffleV2": shufflenet_v2.ShuffleV2,
}

IMAGENET_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "ResNet18": imagenet.resnet18,
    "ResNet34": imagenet.resnet34,
    "ResNet50": imagenet.resnet50,
    "MobileNetV1": imagenet.MobileNetV1,
}

# scikit-learn's 8x8 digits (1 channel): the CPU demo's teacher and student.
DIGITS_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "cnn_digits_teacher": digits_cnn.cnn_digits_teacher,
    "cnn_digits_student": digits_cnn.cnn_digits_student,
}

MODEL_FAMILIES: dict[str, dict[str, Callable[[int], nn.Module]]] = {
    "cifar": CIFAR_MODELS, "imagenet": IMAGENET_MODELS, "digits": DIGITS_MODELS,
}

# Input side each family's models are built for.
FAMILY_IMAGE_SIZE = {"cifar": 32, "imagenet": 224, "digits": 8}


def create(name: str, num_classes: int, family: str = "cifar") -> nn.Module:
    """A randomly initialised model of the registry.

    Args:
        name: an mdistiller model name, e.g. ``"resnet32x4"``, ``"wrn_40_2"``, ``"MobileNetV2"``.
        num_classes: classifier outputs (100 for CIFAR-100, 1000 for ImageNet-1K).
        family: ``"cifar"`` or ``"imagenet"``.

    Raises:
        SrwError: an unknown family or name, or ``num_classes < 1``.
    """
    if family not in MODEL_FAMILIES:
        raise SrwError(f"unknown model family {family!r}; expected one of {', '.join(MODEL_FAMILIES)}")
    models = MODEL_FAMILIES[family]
    if name not in models:
        raise SrwError(f"unknown {family} model {name!r}; expected one of {', '.join(models)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SrwError(f"num_classes must be a positive integer, got {num_classes!r}")
    return models[name](num_classes)


@dataclass(frozen=True)
class FeatureShapes:
    """Shapes of a model's features for one image: ``stages`` ``[(C, H, W), ...]`` of ``feats``, ``pooled`` D."""

    stages: tuple[tuple[int, int, int], ...]
    pooled: int

    @property
    def stage_channels(self) -> list[int]:
        return [channels for channels, _, _ in self.stages]

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        """``shapes[i]`` is ``stages[i]``, the ``(C, H, W)`` of ``feats[i]``."""
        return self.stages[index]

    def __len__(self) -> int:
        return len(self.stages)


@torch.no_grad()
def feature_shapes(model: nn.Module, image_size: int, in_channels: int = 3) -> FeatureShapes:
    """Run one zero ``image_size`` image through ``model`` (in eval mode, then restored).

    Args:
        model: a model of this registry (any model with the output contract).
        image_size: input side in pixels (32 for CIFAR, 224 for ImageNet).
        in_channels: input channels.

    Returns:
        The per-stage feature shapes and the pooled feature size, e.g. for FitNet's ConvReg.
    """
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    model.eval()
    try:
        _, features = model(torch.zeros(1, in_channels, image_size, image_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    stages = tuple(tuple(int(size) for size in feat.shape[1:]) for feat in features["feats"])
    return FeatureShapes(stages=stages, pooled=int(features["pooled_feat"].shape[1]))


def stage_channels(model: nn.Module, image_size: int) -> list[int]:
    """Channels of each of ``features["feats"]`` (mdistiller's ``get_stage_channels`` where it has one)."""
    return feature_shapes(model, image_size).stage_channels


__all__ = [
    "CIFAR_MODELS",
    "FAMILY_IMAGE_SIZE",
    "FeatureShapes",
    "IMAGENET_MODELS",
    "MODEL_FAMILIES",
    "create",
    "feature_shapes",
    "load_teacher_checkpoint",
    "load_weights",
    "stage_channels",
]
