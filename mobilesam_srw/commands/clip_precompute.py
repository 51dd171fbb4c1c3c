"""``srw-clip precompute``: img2dataset tars -> the teacher's pixels and image embeddings, in shards."""

from __future__ import annotations

import argparse

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args

HELP = "encode img2dataset image-text tars with the open_clip teacher into shards (run once, before training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.data_prep.clip_precompute import ClipPrecomputeConfig

    add_config_arguments(parser, ClipPrecomputeConfig)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.clip_precompute import ClipPrecomputeConfig, run_clip_precompute

    run_clip_precompute(config_from_args(ClipPrecomputeConfig, args))
    return 0
