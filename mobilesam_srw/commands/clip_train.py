"""``srw-clip train``: distil the teacher's image embeddings into a student, on the engine."""

from __future__ import annotations

import argparse

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args

HELP = "distil a TinyViT student from the stored CLIP image embeddings with sample-wise SRW over the batch"

# The recipe is AdamW with warmup and cosine (the SAM path's); the SGD and step-schedule options do not apply.
NOT_FOR_CLIP = ("optimizer", "momentum", "schedule", "milestones", "lr_decay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.clip.task import ClipTrainConfig

    add_config_arguments(parser, ClipTrainConfig, exclude=NOT_FOR_CLIP)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.clip.task import ClipTrainConfig, train_clip

    train_clip(config_from_args(ClipTrainConfig, args))
    return 0
