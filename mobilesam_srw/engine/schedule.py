"""Learning-rate schedules, stepped once per optimiser step."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from mobilesam_srw.engine.config import EngineConfig


def warmup_step_count(warmup: float, total_steps: int) -> int:
    """``--warmup`` as steps: a fraction of all steps when < 1, else a number of steps."""
    return int(warmup * total_steps) if warmup < 1 else int(warmup)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear from 1/warmup to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_step_decay(milestone_steps: Sequence[int], decay: float, warmup: int) -> Callable[[int], float]:
    """LR factor: linear warmup, then ``decay ** k`` after the k-th milestone (mdistiller's MultiStepLR)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay ** sum(step >= milestone for milestone in milestone_steps)

    return factor


def build_scheduler(config: EngineConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``--schedule cosine`` or ``step`` (milestones in epochs, converted to optimiser steps)."""
    warmup = warmup_step_count(config.warmup, total_steps)
    if config.schedule == "step":
        factor = warmup_step_decay([epoch * steps_per_epoch for epoch in config.milestones], config.lr_decay, warmup)
    else:
        factor = warmup_cosine(total_steps, warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
