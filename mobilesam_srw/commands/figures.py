"""``srw-sam heatmap`` (Figure 4) and ``srw-sam compare`` (Figure 3)."""

from __future__ import annotations

import argparse
import sys

from mobilesam_srw.commands.config_args import add_config_arguments, config_from_args

HEATMAP_HELP = "draw SRW patch-weight heatmaps of shard images (Figure 4), PNG and PDF"
COMPARE_HELP = "draw teacher and students' masks side by side, boxes where runs differ (Figure 3), PNG and PDF"


def add_heatmap_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.viz.heatmap import HeatmapConfig

    add_config_arguments(parser, HeatmapConfig)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.viz.compare import CompareConfig

    add_config_arguments(parser, CompareConfig)


def run_heatmap(args: argparse.Namespace) -> int:
    from mobilesam_srw.viz.heatmap import HeatmapConfig, draw_heatmaps

    config = config_from_args(HeatmapConfig, args)
    paths = draw_heatmaps(config)
    print(f"wrote {len(paths)} files to {config.out}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from mobilesam_srw.viz.compare import CompareConfig, draw_comparisons

    config = config_from_args(CompareConfig, args)
    paths = draw_comparisons(config)
    print(f"wrote {len(paths)} files to {config.out}", file=sys.stderr)
    return 0
