"""``srw-sam make-sample-data``: SA-1B-format tars from scikit-image's bundled photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a small SA-1B-format data set from scikit-image photos (for trying the pipeline)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for sa_NNNNNN.tar files")
    parser.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--images-per-tar", type=int, default=4, help="images per tar (default 4)")
    parser.add_argument("--max-side", type=int, default=512, help="longest image side (default 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-tar", type=int, default=0, help="number of the first tar (default 0)")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.sample_data import write_sample_sa1b
    from mobilesam_srw.errors import SrwError

    if args.images < 1 or args.images_per_tar < 1 or args.max_side < 16:
        raise SrwError("--images and --images-per-tar must be >= 1, --max-side >= 16")
    paths = write_sample_sa1b(args.out, args.images, args.images_per_tar, args.seed, args.max_side, args.first_tar)
    print(f"wrote {args.images} images in {len(paths)} tars to {args.out}", file=sys.stderr)
    return 0
