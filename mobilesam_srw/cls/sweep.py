"""A sweep of classification runs as launch commands: every run an independent, resumable folder.

A sweep is GPU-days, so ``srw-cls sweep`` does not run it: it writes ``commands.txt`` (one
``srw-cls train`` per run, ``--resume``-safe), ``run_all.sh`` (one after another, or each under
``torchrun``) and ``sweep.sbatch`` (a SLURM array, one task per line of ``commands.txt``). Every run keeps
its recipe's global batch and lr: with ``--gpus N`` each command names the per-rank ``--batch-size``
(the recipe's batch / N; an N that does not divide it is refused).
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.atomic import atomic_path
from mobilesam_srw.cls.config import RECIPES, ClsTrainConfig
from mobilesam_srw.cls.data import DATASET_FAMILY
from mobilesam_srw.cls.methods import METHODS
from mobilesam_srw.cls.models import MODEL_FAMILIES
from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option
from mobilesam_srw.srw import MIN_TAU, NORMALIZERS

# mdistiller's and RepDistiller's teacher folders: <dir>/<teacher>_vanilla/ckpt_epoch_240.pth
TEACHER_CHECKPOINT = "{teacher}_vanilla/ckpt_epoch_240.pth"


@dataclass(kw_only=True)
class Sweep:
    """The runs of a sweep: every pair x method x (vanilla, +SRW per tau and normalizer) x seed
    (``srw-cls sweep``; each field is an option). ``extra``: further ``srw-cls train`` options for every run."""

    dataset: str = option("cifar100", help="data set, as srw-cls train")
    data: Path = option(help="the data folder")
    pairs: list[str] = option(help="teacher:student pairs, e.g. resnet32x4:resnet8x4")
    teacher_dir: Path = option(help="holds <teacher>_vanilla/ckpt_epoch_240.pth (mdistiller's cifar_teachers layout)")
    out: Path = option(help="parent folder of the run folders", flag="--runs-dir")
    methods: list[str] = option(factory=lambda: ["kd", "dkd"], choices=tuple(METHODS), help="distillation methods")
    taus: list[float] = option(factory=lambda: [ClsTrainConfig.tau], minimum=MIN_TAU,
                               help="SRW temperatures (Table 8's sweep when several)")
    normalizers: list[str] = option(factory=lambda: ["softmax"], choices=NORMALIZERS[:3],
                                    help="softmax (Eq. 5, SRW), reverse (Table 7), sum (Table 9)")
    seeds: list[int] = option(factory=lambda: [0], minimum=0, help="seeds per configuration")
    vanilla: bool = option(True, help="only +SRW runs (no baseline column)", flag="--no-vanilla")
    gpus: int = option(1, minimum=1, help="ranks per run (torchrun --nproc-per-node when > 1)")
    extra: list[str] = option(factory=list, help="further srw-cls train options for every run", cli=False)

    def check(self) -> None:
        """One-line :class:`SrwError` for a value no run could take: an unknown data set or model (a model name
        also names the run folder, so it cannot reach outside ``out``), a tau that is not a positive finite
        number, fewer than one GPU."""
        if not DATASET_FAMILY.get(self.dataset):
            raise SrwError(f"--dataset must be one of {', '.join(n for n, f in DATASET_FAMILY.items() if f)}, "
                           f"got {self.dataset!r}")
        models = MODEL_FAMILIES[DATASET_FAMILY[self.dataset]]
        for pair in self.pairs:
            teacher, sep, student = pair.partition(":")
            if not sep or not teacher or not student:
                raise SrwError(f"--pairs: expected teacher:student, got {pair!r}")
            if unknown := [name for name in (teacher, student) if name not in models]:
                raise SrwError(f"--pairs: {unknown[0]!r} is not a {self.dataset} model ({', '.join(models)})")
        check_options(self)  # taus positive and finite, seeds >= 0, gpus >= 1, choices
        if self.global_batch % self.gpus:
            raise SrwError(f"--gpus {self.gpus} does not divide the {self.dataset} recipe's global batch "
                           f"{self.global_batch}; choose a divisor (each rank takes an equal share)")

    @property
    def global_batch(self) -> int:
        """The recipe's batch, which every run keeps whatever the GPU count."""
        return RECIPES[DATASET_FAMILY[self.dataset]].batch_size

    def runs(self) -> list[tuple[str, list[str]]]:
        """(run folder name, ``srw-cls train`` arguments) of every run; each folder is named once."""
        self.check()
        runs = []
        for pair, method, seed in itertools.product(self.pairs, self.methods, self.seeds):
            teacher, _, student = pair.partition(":")
            checkpoint = self.teacher_dir / TEACHER_CHECKPOINT.format(teacher=teacher)
            base = [
                "--dataset",
                self.dataset,
                "--data",
                str(self.data),
                "--teacher",
                teacher,
                "--student",
                student,
                "--teacher-checkpoint",
                str(checkpoint),
                "--method",
                method,
                "--seed",
                str(seed),
                "--batch-size",  # per rank: the recipe's global batch over the ranks
                str(self.global_batch // self.gpus),
                *self.extra,
            ]
            variants = [(f"{method}", [])] if self.vanilla else []
            variants += [
                (f"{method}_srw_{normalizer}_tau{tau:g}", ["--srw", "--tau", f"{tau:g}", "--normalizer", normalizer])
                for normalizer, tau in itertools.product(self.normalizers, self.taus)
            ]
            for name, options in variants:
                folder = f"{teacher}_{student}_{name}_seed{seed}"
                runs.append((folder, [*base, *options, "--out", str(self.out / folder), "--no-progress"]))
        folders = [folder for folder, _ in runs]
        if repeated := sorted({folder for folder in folders if folders.count(folder) > 1}):
            raise SrwError(f"two runs of the sweep would share the folder {repeated[0]} (a repeated pair, method, "
                           "tau or seed?)")
        return runs

    def commands(self) -> list[str]:
        """One shell command per run; rerunning one resumes it (``--resume`` when its folder has a checkpoint)."""
        program = (
            ["torchrun", "--nproc-per-node", str(self.gpus), "-m", "mobilesam_srw.cls", "train"]
            if self.gpus > 1
            else ["srw-cls", "train"]
        )
        lines = []
        for folder, arguments in self.runs():
            refuse_control_characters(arguments)
            command = shlex.join([*program, *arguments])
            last = shlex.quote(str(self.out / folder / "checkpoints" / "last.pt"))
            lines.append(f"if [ -f {last} ]; then {command} --resume; else {command}; fi")
        return lines


def refuse_control_characters(values: list[str], what: str = "a value") -> None:
    """One line for a value holding a control character (a newline, a tab, an escape, ...): ``commands.txt`` is
    read one command per line (``sweep.sbatch``), so a newline inside a value would start a command of its own."""
    for value in values:
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in str(value)):
            raise SrwError(f"{what} holds a control character (newline, tab, ...): {str(value)!r:.200}; launch "
                           "scripts take no such values (rename the folder)")


def write_sweep(sweep: Sweep, folder: Path) -> list[Path]:
    """``commands.txt``, ``run_all.sh`` and ``sweep.sbatch`` in ``folder``; returns their paths."""
    folder = Path(folder)
    refuse_control_characters([str(folder.resolve())], "--script-dir")
    if folder.exists() and not folder.is_dir():
        raise SrwError(f"--script-dir {folder} exists and is not a folder")
    commands = sweep.commands()  # every value checked before the folder is made
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "commands.txt": "\n".join(commands) + "\n",
        "run_all.sh": "#!/usr/bin/env bash\n# Every run of the sweep, one after another; rerun to resume.\nset -e\n"
        + "\n".join(commands)
        + "\n",
        "sweep.sbatch": (
            "#!/usr/bin/env bash\n"
            f"#SBATCH --array=1-{len(commands)}\n"
            f"#SBATCH --gres=gpu:{sweep.gpus}\n"
            "#SBATCH --requeue\n"
            "# One array task per line of commands.txt; a requeued task resumes its run.\n"
            f'eval "$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str((folder / "commands.txt").resolve()))})"\n'
        ),
    }
    paths = []
    for name, text in files.items():
        with atomic_path(folder / name) as temporary:
            temporary.write_text(text)
            temporary.chmod(0o755 if name.endswith("sh") or name.endswith("sbatch") else 0o644)
        paths.append(folder / name)
    return paths
