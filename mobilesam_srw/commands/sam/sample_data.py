"""``srw-sam make-sample-data``: SA-1B tars, an image folder or a COCO set from scikit-image's photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilesam_srw.commands.config_args import Subcommand

HELP = "write a small data set from scikit-image photos (SA-1B tars, an image folder or COCO) to try the pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.data_prep.sam.sample_data import SAMPLE_FORMATS

    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--format", choices=SAMPLE_FORMATS, default="sa1b",
                        help="sa1b: sa_NNNNNN.tar files (precompute --sa1b); folder: nested folders of JPEG, PNG, "
                             "WebP, TIFF and BMP images (--images); coco: images/ and instances.json "
                             "(--coco OUT/instances.json --image-root OUT/images) (default sa1b)")
    parser.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--images-per-tar", type=int, default=4, help="sa1b: images per tar (default 4)")
    parser.add_argument("--max-side", type=int, default=512, help="longest image side (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photos' crops and variants (default 0)")
    parser.add_argument("--first-tar", type=int, default=0, help="sa1b: number of the first tar (default 0)")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.sam import sample_data
    from mobilesam_srw.errors import SrwError

    if args.images < 1 or args.images_per_tar < 1 or args.max_side < 16:
        raise SrwError("--images and --images-per-tar must be >= 1, --max-side >= 16")
    if args.format == "sa1b":
        paths = sample_data.write_sample_sa1b(args.out, args.images, args.images_per_tar, args.seed, args.max_side,
                                              args.first_tar)
        print(f"wrote {args.images} images in {len(paths)} tars to {args.out}; use: precompute --sa1b {args.out}",
              file=sys.stderr)
    elif args.format == "folder":
        sample_data.write_sample_folder(args.out, args.images, args.seed, args.max_side)
        print(f"wrote {args.images} images below {args.out}; use: precompute --images {args.out}", file=sys.stderr)
    else:
        coco_file = sample_data.write_sample_coco(args.out, args.images, args.seed, args.max_side)
        print(f"wrote {args.images} images and {coco_file}; use: precompute --coco {coco_file} "
              f"--image-root {args.out / sample_data.COCO_IMAGES}", file=sys.stderr)
    return 0


COMMAND = Subcommand(HELP, add_arguments, run)
