"""``srw-sam train``: distil a student from precompute shards."""

from __future__ import annotations

import argparse

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args
from mobilesam_srw.sam.task import SamTrainConfig

HELP = "distil a MobileSAM student from precomputed teacher embeddings with patch-wise SRW"

# Sample-wise options that do not apply to SAM's patch-wise groups, or recipes SAM does not use.
NOT_FOR_SAM = ("srw_scope", "optimizer", "momentum", "schedule", "milestones", "lr_decay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, SamTrainConfig, exclude=NOT_FOR_SAM)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.sam.train import train

    train(config_from_args(SamTrainConfig, args))
    return 0
