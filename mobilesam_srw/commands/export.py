"""``srw-sam export``: a run's student as a MobileSAM checkpoint (``mobile_sam.pt`` layout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a trained student with SAM's prompt encoder and mask decoder as a MobileSAM checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder of srw-sam train (or its student.pt)")
    parser.add_argument("--sam-checkpoint", type=Path, required=True,
                        help="SAM checkpoint giving the prompt encoder and mask decoder, e.g. sam_vit_h_4b8939.pth")
    parser.add_argument("--out", type=Path, required=True, help="output file, e.g. mobile_sam_srw.pt")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.sam.export import export_mobilesam

    export_mobilesam(args.run, args.sam_checkpoint, args.out)
    print(f"wrote {args.out} (load it with mobile_sam.sam_model_registry['vit_t'])", file=sys.stderr)
    return 0
