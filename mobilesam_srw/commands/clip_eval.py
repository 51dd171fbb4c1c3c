"""``srw-clip eval``: zero-shot top-1/top-5 of students and teacher, Table 4's tail bands, a Table 5-style table."""

from __future__ import annotations

import argparse

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args

HELP = "zero-shot classification of students and teacher on an ImageFolder (ImageNet-1K val: Table 5)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.clip.evaluate import ClipEvalConfig

    add_config_arguments(parser, ClipEvalConfig)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.clip.evaluate import ClipEvalConfig, evaluate_clip

    evaluate_clip(config_from_args(ClipEvalConfig, args))
    return 0
