"""Distillation methods for classification: a plain dict registry and mdistiller's settings.

Settings are mdistiller's configs: KD (CE 0.1 + KD 0.9, T 4 on CIFAR; CE 0.5 + KD 0.5, T 1 on
ImageNet), FitNet (hint layer 2, ConvReg, hint weight 100, CE 1), DKD (CE 1, alpha 1, beta 8, T 4,
warmup 20 epochs on CIFAR; T 1, warmup 1 on ImageNet) with its per-pair betas.
"""

from __future__ import annotations

from dataclasses import replace

from mobilesam_srw.cls.methods.base import Method, MethodSettings
from mobilesam_srw.cls.methods.dkd import DKD
from mobilesam_srw.cls.methods.fitnet import FitNet
from mobilesam_srw.cls.methods.kd import KD

METHODS: dict[str, type[Method]] = {"kd": KD, "fitnet": FitNet, "dkd": DKD}

SETTINGS: dict[tuple[str, str], MethodSettings] = {
    ("kd", "cifar"): MethodSettings(ce_weight=0.1, distill_weight=0.9, temperature=4.0),
    ("kd", "imagenet"): MethodSettings(ce_weight=0.5, distill_weight=0.5, temperature=1.0),
    ("fitnet", "cifar"): MethodSettings(ce_weight=1.0, distill_weight=100.0, hint_layer=2),
    ("fitnet", "imagenet"): MethodSettings(ce_weight=1.0, distill_weight=100.0, hint_layer=2),
    ("dkd", "cifar"): MethodSettings(ce_weight=1.0, alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20),
    ("dkd", "imagenet"): MethodSettings(ce_weight=1.0, alpha=1.0, beta=0.5, temperature=1.0, warmup_epochs=1),
}
# The digits demo (20 epochs, ours): CIFAR's settings, DKD's warmup scaled to 5 epochs.
SETTINGS.update({(method, "digits"): settings for (method, family), settings in SETTINGS.items() if family == "cifar"})
SETTINGS[("dkd", "digits")] = replace(SETTINGS[("dkd", "cifar")], warmup_epochs=5)

# mdistiller's per-pair DKD betas: (teacher, student) -> beta.
DKD_BETAS: dict[tuple[str, str], float] = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("ResNet34", "ResNet18"): 0.5,
    ("ResNet50", "MobileNetV1"): 2.0,
}


def method_settings(method: str, family: str, teacher: str, student: str) -> MethodSettings:
    """mdistiller's settings of ``method`` for a teacher-student pair on a data-set family."""
    settings = SETTINGS[(method, family)]
    if method == "dkd" and (teacher, student) in DKD_BETAS:
        settings = replace(settings, beta=DKD_BETAS[(teacher, student)])
    return settings


__all__ = ["DKD_BETAS", "METHODS", "Method", "MethodSettings", "SETTINGS", "method_settings"]
