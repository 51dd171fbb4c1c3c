"""The engine's configuration: what every training run has, whatever the task.

Defaults are the SAM path's (the paper gives AdamW, lr 0.002, batch 64, 8 epochs for MobileSAM);
a task's configuration subclasses this one, adds its own fields and may change a default
(classification: SGD, lr 0.05, 240 epochs, step decay), each written once there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option
from mobilesam_srw.srw import MIN_TAU, NORMALIZERS

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SRW_SCOPES = ("batch", "local")
LOSSES = ("srw", "mse")  # what feature-distillation tasks (SAM, CLIP) take as --loss


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass(kw_only=True)
class EngineConfig:
    """Settings every task shares: optimisation, schedule, SRW, precision, run folder.

    ``batch_size`` is per rank and micro-step; the global batch is ``batch_size x ranks x grad_accum``.
    """

    out: Path = option(help="run folder (config.json, metrics.jsonl, tensorboard/, checkpoints/, student.pt)")
    tau: float = option(0.5, help=f"SRW temperature of Eq. 5 (>= {MIN_TAU:g})", minimum=MIN_TAU)
    normalizer: str = option("softmax", help="weights from avesim: softmax (Eq. 5), reverse (Table 7), sum (Eq. 7)",
                             choices=NORMALIZERS[:3])
    srw_scope: str = option("batch", choices=SRW_SCOPES,
                            help="SRW groups of sample-wise tasks: batch = the global batch, exact over ranks and "
                                 "accumulation; local = each rank's micro-batch (cheaper, changes with the GPU count)")
    epochs: int = option(8, help="training epochs", minimum=1)
    lr: float = option(0.002, help="peak learning rate", above=0)
    batch_size: int = option(64, help="samples per rank and micro-step", minimum=1)
    grad_accum: int = option(1, help="micro-steps per optimiser step", minimum=1)
    optimizer: str = option("adamw", help="optimiser", choices=OPTIMIZERS)
    momentum: float = option(0.9, help="SGD momentum", minimum=0)
    weight_decay: float = option(0.01, help="weight decay (AdamW: not on norms, biases, attention biases)", minimum=0)
    schedule: str = option("cosine", choices=SCHEDULES,
                           help="cosine: linear warmup then cosine to 0; step: x lr-decay at each milestone epoch")
    warmup: float = option(0.02, help="linear warmup: a fraction of all steps (< 1) or a number of steps (>= 1)",
                           minimum=0)
    milestones: list[int] = option(factory=list, help="step schedule: epochs at which the lr is multiplied by "
                                   "--lr-decay", minimum=1)
    lr_decay: float = option(0.1, help="step schedule: lr factor at each milestone", above=0)
    amp: str = option("auto", choices=AMP_MODES,
                      help="mixed precision: auto = bf16 on GPUs that support it, off on CPU; fp16 uses a grad scaler")
    compile: bool = option(False, help="torch.compile the student's forward (GPUs; the first steps compile)")
    resume: bool = option(False, help="continue the run in --out from its last checkpoint")
    seed: int = option(0, help="seeds initialisation and the data order")
    workers: int = option(factory=default_workers, help="data loading processes per rank (default min(4, cores))",
                          minimum=0)
    save_every: int = option(500, help="checkpoint every N optimiser steps (and at each epoch's end)", minimum=1)
    max_steps: int | None = option(None, help="stop after N optimiser steps (the schedule still spans all epochs)",
                                   minimum=1)
    device: str = option("auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")

    # Fields that define the run: --resume refuses a change of any of them.
    RUN_FIELDS = ("tau", "normalizer", "srw_scope", "epochs", "lr", "batch_size", "grad_accum", "optimizer",
                  "momentum", "weight_decay", "schedule", "warmup", "milestones", "lr_decay", "seed")

    @property
    def uses_srw(self) -> bool:
        """Whether distillation losses are re-weighted (tasks say how the user chooses it)."""
        raise NotImplementedError

    @property
    def weight_normalizer(self) -> str:
        """The normalizer the engine uses: the chosen one with SRW, ``uniform`` (a plain mean) without."""
        return self.normalizer if self.uses_srw else "uniform"

    def check(self) -> None:
        """Validate every option (one-line :class:`SrwError`), before any folder is made."""
        check_options(self)
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise SrwError(f"--out {out} exists and is not a folder")

    def run_fields(self) -> dict:
        """The values of :attr:`RUN_FIELDS`, in a form a checkpoint stores and compares."""
        return {name: _plain(getattr(self, name)) for name in self.RUN_FIELDS}


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(kw_only=True)
class FeatureDistillationConfig(EngineConfig):
    """A task that distils teacher features with MSE (Eq. 2), re-weighted by SRW or not: SAM and CLIP."""

    loss: str = option("srw", choices=LOSSES, help="srw: the MSE re-weighted by SRW (Eq. 4-6); mse: the plain MSE, "
                                                   "the baseline (MobileSAM's)")

    partial_shards: bool = option(False, help="train on the shards a precompute has written so far while it still "
                                              "runs or after it was killed (refused by default)")

    RUN_FIELDS = EngineConfig.RUN_FIELDS + ("loss",)

    @property
    def uses_srw(self) -> bool:
        return self.loss == "srw"


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device`` (None: full precision)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]



