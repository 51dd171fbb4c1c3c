"""``srw-cls``: classification distillation (KD, FitNet, DKD, each with and without SRW) on the engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilesam_srw.commands.config_args import (
    Program,
    Subcommand,
    add_config_arguments,
    config_command,
    config_from_args,
    files_written,
)

DESCRIPTION = ("Distil CIFAR and ImageNet classifiers with KD, FitNet or DKD, with or without Sample-wise "
               "Re-Weighting (Yu et al., ACCV 2024); mdistiller's models, checkpoints and recipes.")

# Options of the engine that classification sets from its recipe or does not use.
NOT_FOR_TEACHER = ("teacher", "teacher_checkpoint", "method", "srw", "srw_feature", "tau", "normalizer", "srw_scope")


def _add_train(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.cls.config import ClsTrainConfig

    add_config_arguments(parser, ClsTrainConfig)


def _run_train(args: argparse.Namespace) -> int:
    from mobilesam_srw.cls.config import ClsTrainConfig
    from mobilesam_srw.cls.train import train
    from mobilesam_srw.errors import SrwError

    if args.method is None:
        raise SrwError("--method is required (kd, fitnet or dkd); srw-cls train-teacher trains a teacher")
    train(config_from_args(ClsTrainConfig, args))
    return 0


def _add_train_teacher(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.cls.config import ClsTrainConfig

    add_config_arguments(parser, ClsTrainConfig, exclude=(*NOT_FOR_TEACHER, "student"))
    parser.add_argument("--model", dest="student", metavar="NAME",
                        help="the network to train (mdistiller's names: resnet32x4, wrn_40_2, vgg13, ResNet34, ...)")
    parser.add_argument("--student", dest="student", help=argparse.SUPPRESS)  # its name before --model: still read


def _run_train_teacher(args: argparse.Namespace) -> int:
    from mobilesam_srw.cls.config import ClsTrainConfig
    from mobilesam_srw.cls.train import train
    from mobilesam_srw.errors import SrwError

    if args.student is None:
        raise SrwError("--model is required: the network to train (e.g. resnet32x4)")
    train(config_from_args(ClsTrainConfig, args, method=None))
    return 0


def _add_eval(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.eval.cls.evaluate import ClsEvalConfig

    add_config_arguments(parser, ClsEvalConfig)


def _run_eval(args: argparse.Namespace) -> int:
    from mobilesam_srw.eval.cls.evaluate import ClsEvalConfig, evaluate_classifiers

    print(evaluate_classifiers(config_from_args(ClsEvalConfig, args))["table"])
    return 0


def _add_table(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.metrics import DEFAULT_TOP1_STATISTIC, TOP1_STATISTICS

    parser.add_argument("runs", nargs="+", type=Path, help="run folders (globs expanded by the shell)")
    parser.add_argument("--out", type=Path, help="write the tables to this Markdown file too")
    parser.add_argument("--statistic", choices=tuple(TOP1_STATISTICS), default=DEFAULT_TOP1_STATISTIC,
                        help="each run's top-1: " + "; ".join(f"{name}: {words}" for name, words in
                                                              TOP1_STATISTICS.items())
                        + f" (default {DEFAULT_TOP1_STATISTIC})")


def _run_table(args: argparse.Namespace) -> int:
    from mobilesam_srw.atomic import atomic_path
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.eval.cls.tables import comparison_tables, read_run

    if args.out is not None and args.out.is_dir():
        raise SrwError(f"--out {args.out} is a folder; name the Markdown file to write")
    table = comparison_tables([read_run(run) for run in args.runs], args.statistic)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as temporary:
            temporary.write_text(table)
    return 0


def _add_sweep(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.cls.sweep import Sweep

    add_config_arguments(parser, Sweep)
    parser.add_argument("--script-dir", type=Path, required=True, help="where commands.txt, run_all.sh, sweep.sbatch go")


def _run_sweep(args: argparse.Namespace) -> int:
    from mobilesam_srw.cls.sweep import Sweep, write_sweep

    sweep = config_from_args(Sweep, args)
    paths = write_sweep(sweep, args.script_dir)
    print(f"{len(sweep.runs())} runs: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


PROGRAM = Program("srw-cls", DESCRIPTION, {
    "train-teacher": Subcommand("train a teacher (--model) with cross-entropy on the data set's recipe",
                                _add_train_teacher, _run_train_teacher),
    "train": Subcommand("distil a student with KD, FitNet or DKD, --srw to re-weight samples", _add_train,
                        _run_train),
    "eval": Subcommand("top-1/top-5 and Table 4's tail bands of runs, with the Δ between them", _add_eval, _run_eval),
    "bands": config_command("draw Table 4's bands of an srw-cls eval --out (per avesim band, +SRW vs its "
                            "baseline, mean ± std over seeds), PNG and PDF", "mobilesam_srw.viz.cls:ClsBandsConfig",
                            "mobilesam_srw.viz.cls:draw_cls_bands", report=files_written),
    "table": Subcommand("the paper's Tables 1-3 and 7-9 from a set of runs", _add_table, _run_table),
    "sweep": Subcommand("write a sweep of runs as launch commands (shell, torchrun, SLURM array)", _add_sweep,
                        _run_sweep),
    "demo": config_command("KD, KD+SRW, DKD, DKD+SRW over seeds on scikit-learn's digits, with a report",
                           "mobilesam_srw.commands.cls.demo:ClsDemoConfig", "mobilesam_srw.commands.cls.demo:run_demo",
                           report=lambda config, report: f"report: {report}"),
})
