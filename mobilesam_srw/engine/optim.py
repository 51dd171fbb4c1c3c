"""Optimisers over parameter groups: AdamW (SAM, CLIP) or SGD with momentum (classification)."""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from mobilesam_srw.engine.config import EngineConfig

# Parameters that are not weights of a linear map: no weight decay (timm's TinyViT lists the
# attention biases in ``no_weight_decay_keywords``; 1-d norms and biases are excluded by timm).
NO_DECAY_PATTERNS = ("*attention_biases*", "*attention_bias_idxs*")


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """timm's groups: weight decay on weights, none on norms, biases and attention biases."""
    return param_groups_weight_decay(module, weight_decay, no_weight_decay_list=NO_DECAY_PATTERNS)


def uniform_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """One group, weight decay on every parameter (mdistiller's SGD recipe)."""
    return [{"params": [p for p in module.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def build_optimizer(config: EngineConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
