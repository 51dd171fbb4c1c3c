"""The configuration of ``srw-sam train``, with the paper's defaults, and its LR schedule."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobilesam_srw.errors import SrwError
from mobilesam_srw.srw import NORMALIZERS


@dataclass
class TrainConfig:
    """A training run; defaults are the paper's (AdamW, lr 0.002, batch 64, 8 epochs).

    Args:
        shards: precompute shards (globs, folders, files).
        out: the run folder.
        tau: SRW temperature (Eq. 5).
        loss: ``srw`` (weighted) or ``mse`` (uniform weights: the MobileSAM baseline).
        normalizer: ``softmax`` (Eq. 5), ``reverse`` (Table 7), ``sum`` (Eq. 7).
        epochs, lr, batch_size, weight_decay: optimisation; batch_size is per rank and micro-step.
        warmup: linear warmup, a fraction of all steps (< 1) or a number of steps (>= 1).
        grad_accum: micro-steps per optimiser step.
        amp: ``bf16``, ``fp16``, ``off``, or ``auto`` (bf16 on GPUs that have it, else off).
        student: ``tinyvit-5m`` (MobileSAM), ``tinyvit-micro``, or ``timm:<name>``.
        init: start from a student file, run folder, or MobileSAM checkpoint.
        resume: continue the run in ``out`` from its last checkpoint.
        seed: seeds initialisation and the data order.
        workers: DataLoader processes per rank.
        val_shards: held-out shards, evaluated after each epoch.
        ignore_padding: give patches that lie only on SAM's padding no weight.
        save_every: checkpoint every N optimiser steps (and at each epoch's end).
        max_steps: stop after N optimiser steps (the schedule still spans all epochs).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        progress: show a progress bar.
    """

    shards: list[str]
    out: Path
    tau: float = 0.5
    loss: str = "srw"
    normalizer: str = "softmax"
    epochs: int = 8
    lr: float = 0.002
    batch_size: int = 64
    weight_decay: float = 0.01
    warmup: float = 0.02
    grad_accum: int = 1
    amp: str = "auto"
    student: str = "tinyvit-5m"
    init: Path | None = None
    resume: bool = False
    seed: int = 0
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    val_shards: list[str] | None = None
    ignore_padding: bool = False
    save_every: int = 500
    max_steps: int | None = None
    device: str = "auto"
    progress: bool = True

    # Fields that define the run; a resume must not change them.
    RUN_FIELDS = ("tau", "loss", "normalizer", "epochs", "lr", "batch_size", "weight_decay", "warmup",
                  "grad_accum", "student", "seed", "ignore_padding", "max_steps")

    def check(self) -> None:
        if not math.isfinite(self.tau) or self.tau <= 0:
            raise SrwError(f"--tau must be a finite number > 0, got {self.tau}")
        if self.loss not in ("srw", "mse"):
            raise SrwError(f"--loss must be srw or mse, got {self.loss}")
        if self.normalizer not in NORMALIZERS:
            raise SrwError(f"--normalizer must be one of {', '.join(NORMALIZERS)}, got {self.normalizer}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise SrwError(f"--amp must be bf16, fp16, off or auto, got {self.amp}")
        for name in ("epochs", "batch_size", "grad_accum", "save_every"):
            if getattr(self, name) < 1:
                raise SrwError(f"--{name.replace('_', '-')} must be >= 1")
        if self.lr <= 0 or self.warmup < 0:
            raise SrwError("--lr must be > 0 and --warmup >= 0")

    @property
    def weight_normalizer(self) -> str:
        return "uniform" if self.loss == "mse" else self.normalizer


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR factor: linear from 1/warmup to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
