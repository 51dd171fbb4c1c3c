"""``srw-sam eval``: mIoU of students' masks against the teacher's."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate students against the teacher's masks from stored embeddings (Table 6: point grids, mIoU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="precompute shards of held-out images")
    parser.add_argument("--student", nargs="+", required=True, type=Path, dest="students",
                        help="run folders (or student.pt files), in table order, e.g. runs/mse runs/srw")
    parser.add_argument("--sam-checkpoint", type=Path,
                        help="SAM checkpoint for the prompt encoder and mask decoder (default: the shards' tiny teacher)")
    parser.add_argument("--grid", type=int, nargs="+", default=[32], dest="grids",
                        help="points per side; several in one pass, e.g. --grid 5 16 32 (default 32)")
    parser.add_argument("--match", choices=["all", "teacher-best", "own-best"], default="all",
                        help="grid mode: pairing of the 3 masks per prompt (default all: index by index)")
    parser.add_argument("--mode", choices=["grid", "everything", "gt"], default="grid",
                        help="grid: point grids vs the teacher's masks (Table 6); everything: automatic masks matched "
                             "one to one, recall by size; gt: SA-1B annotation prompts vs ground truth")
    parser.add_argument("--prompt", choices=["center", "box"], default="center", help="gt mode: prompt per annotation")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, help="everything mode: generator filter")
    parser.add_argument("--stability-thresh", type=float, default=0.95, help="everything mode: generator filter")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.eval.evaluate import EvalConfig, evaluate

    evaluate(EvalConfig(shards=args.shards, students=args.students, out=args.out, sam_checkpoint=args.sam_checkpoint,
                        mode=args.mode, grids=args.grids, match=args.match, prompt=args.prompt,
                        pred_iou_thresh=args.pred_iou_thresh, stability_thresh=args.stability_thresh,
                        limit=args.limit, points_per_batch=args.points_per_batch,
                        device=args.device, progress=not args.no_progress))
    return 0
