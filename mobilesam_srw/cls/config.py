"""``srw-cls`` configuration: the engine's settings with mdistiller's recipes as defaults.

A recipe fills what the user leaves unset: CIFAR: SGD momentum 0.9, lr 0.05 (0.01 for ShuffleNet and
MobileNet students), weight decay 5e-4, batch 64, 240 epochs, x0.1 at epochs 150/180/210;
ImageNet: SGD lr 0.2, batch 512, weight decay 1e-4, 100 epochs, x0.1 at 30/60/90. A recipe's batch is
the global batch (``--batch-size`` x ranks x ``--grad-accum``). Training is fp32, as mdistiller's
(``--amp off``; ``--amp bf16`` is an opt-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.cls.data import DATASET_FAMILY, DATASETS
from mobilesam_srw.cls.methods import METHODS
from mobilesam_srw.engine import EngineConfig
from mobilesam_srw.engine.config import AMP_MODES, OPTIMIZERS, SCHEDULES
from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import option
from mobilesam_srw.srw import MIN_TAU

SRW_FEATURES = ("penultimate", "logits")
SMALL_LR_STUDENTS = ("ShuffleV1", "ShuffleV2", "MobileNetV2", "MobileNetV1")  # mdistiller: lr 0.01


@dataclass(frozen=True)
class Recipe:
    """mdistiller's optimisation recipe of a data-set family."""

    lr: float
    batch_size: int
    epochs: int
    weight_decay: float
    milestones: tuple[int, ...]
    small_student_lr: float | None = None


RECIPES = {
    "cifar": Recipe(
        lr=0.05, batch_size=64, epochs=240, weight_decay=5e-4, milestones=(150, 180, 210), small_student_lr=0.01
    ),
    "imagenet": Recipe(lr=0.2, batch_size=512, epochs=100, weight_decay=1e-4, milestones=(30, 60, 90)),
    "digits": Recipe(lr=0.05, batch_size=64, epochs=20, weight_decay=5e-4, milestones=(12, 16)),  # ours: the demo
}


@dataclass(kw_only=True)
class ClsTrainConfig(EngineConfig):
    """A classification run: ``srw-cls train`` (a method) or ``train-teacher`` (``method=None``).

    Unset optimisation fields (None) take the data set's recipe (:data:`RECIPES`).
    """

    dataset: str = option("cifar100", choices=tuple(name for name, family in DATASET_FAMILY.items() if family),
                          help="data set (digits: scikit-learn's 8x8 handwritten digits, for the demo)")
    data: Path | None = option(
        None,
        help="folder holding cifar-100-python/ (or the binary folder, or the archive); for "
        "imagenet the folder holding train/ and val/",
    )
    student: str = option(help="model to train (mdistiller's names: resnet8x4, wrn_16_2, ShuffleV1, ...)")
    teacher: str | None = option(None, help="teacher model (mdistiller's names)")
    teacher_checkpoint: Path | None = option(None, help="the teacher's weights ({'model': state_dict} or a state dict)")
    method: str | None = option(None, choices=tuple(METHODS), help="distillation method")
    srw: bool = option(False, help="re-weight the distillation term per sample over the global batch (+SRW)")
    srw_feature: str = option(
        "penultimate",
        choices=SRW_FEATURES,
        help="teacher output that Eq. 4 compares: the pooled penultimate feature or the logits",
    )
    tau: float = option(0.7, minimum=MIN_TAU, help="SRW temperature of Eq. 5 (Table 8: best 0.5-1.0 per pair)")
    optimizer: str = option("sgd", choices=OPTIMIZERS, help="optimiser")
    schedule: str = option("step", choices=SCHEDULES, help="lr schedule")
    warmup: float = option(0.0, minimum=0, help="linear lr warmup (fraction of steps if < 1, else steps)")
    lr: float | None = option(None, above=0, help="learning rate (default: the recipe's)")
    batch_size: int | None = option(None, minimum=1, help="samples per rank and micro-step (default: the recipe's)")
    epochs: int | None = option(None, minimum=1, help="training epochs (default: the recipe's)")
    weight_decay: float | None = option(None, minimum=0, help="SGD weight decay (default: the recipe's)")
    milestones: list[int] | None = option(None, minimum=1, help="epochs of lr x --lr-decay (default: the recipe's)")
    augment: bool = option(True, help="no training augmentation", flag="--no-augment")
    amp: str = option("off", choices=AMP_MODES, help="mixed precision: off = fp32, as mdistiller trains (its "
                                                     "recipes' numbers); bf16 (or auto: bf16 on GPUs that support "
                                                     "it) is faster, an opt-in; fp16 uses a grad scaler")

    RUN_FIELDS = EngineConfig.RUN_FIELDS + ("dataset", "student", "teacher", "method", "srw", "srw_feature")

    def __post_init__(self) -> None:
        recipe = RECIPES[self.family]
        lr = recipe.small_student_lr if recipe.small_student_lr and self.student in SMALL_LR_STUDENTS else recipe.lr
        for name, value in (
            ("lr", lr),
            ("batch_size", recipe.batch_size),
            ("epochs", recipe.epochs),
            ("weight_decay", recipe.weight_decay),
            ("milestones", list(recipe.milestones)),
        ):
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def family(self) -> str:
        if self.dataset not in DATASET_FAMILY:
            raise SrwError(f"--dataset must be one of {', '.join(DATASET_FAMILY)}, got {self.dataset}")
        return DATASET_FAMILY[self.dataset]

    @property
    def uses_srw(self) -> bool:
        return self.srw

    def check(self) -> None:
        super().check()
        if self.data is None and DATASETS[self.dataset].needs_data:
            raise SrwError(f"--data is required for --dataset {self.dataset}")
        if self.method is not None and (self.teacher is None or self.teacher_checkpoint is None):
            raise SrwError(f"--method {self.method} needs --teacher and --teacher-checkpoint")
        if self.teacher_checkpoint is not None and not Path(self.teacher_checkpoint).is_file():
            raise SrwError(f"--teacher-checkpoint not found: {self.teacher_checkpoint}")
