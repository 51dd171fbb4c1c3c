"""``srw-sam eval``: mIoU of students' masks against the teacher's."""

from __future__ import annotations

import argparse

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args

HELP = "evaluate students against the teacher's masks from stored embeddings (Table 6: point grids, mIoU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.eval.evaluate import EvalConfig

    add_config_arguments(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.eval.evaluate import EvalConfig, evaluate

    evaluate(config_from_args(EvalConfig, args))
    return 0
