"""``srw-sam precompute``: SA-1B tars, image folders or a COCO file -> teacher-embedding shards.

The options are :class:`~mobilesam_srw.data_prep.sam.precompute.PrecomputeConfig`'s fields, except the input
(``--sa1b``, ``--images`` or ``--coco``: the config's ``input_kind`` and ``inputs``) and ``--max-file-mb``
(the config's ``max_file_bytes``, in MiB).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from mobilesam_srw.commands.config_args import (
    Subcommand,
    add_config_arguments,
    config_from_args,
)

HELP = "encode images with a SAM-family teacher into WebDataset shards (run once, before training)"

MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig

    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--sa1b", nargs="+", metavar="PATH",
                        help="SA-1B tars, folders of tars or of sa_*.jpg/json pairs, or globs (quote them)")
    inputs.add_argument("--images", nargs="+", metavar="PATH",
                        help="folders (read recursively), image files or globs: JPEG, PNG, TIFF, WebP, BMP; "
                             "no annotations needed")
    inputs.add_argument("--coco", type=Path, metavar="FILE",
                        help="COCO instances JSON (polygon/RLE masks, boxes), with --image-root")
    add_config_arguments(parser, PrecomputeConfig)
    max_file = {field.name: field for field in dataclasses.fields(PrecomputeConfig)}["max_file_bytes"]
    parser.add_argument("--max-file-mb", type=float, metavar="X",
                        help=f"{max_file.metadata['help']} (default {max_file.default / MIB:g} MiB)")


def _max_file_bytes(mebibytes: float) -> int:
    """``--max-file-mb`` -> the config's ``max_file_bytes`` (whole bytes, rounded down)."""
    from mobilesam_srw.errors import SrwError

    size = mebibytes * MIB
    if not (math.isfinite(size) and size >= 1):  # also refuses NaN
        raise SrwError(f"--max-file-mb must be a finite number of MiB, at least 1 byte, got {mebibytes}")
    return int(size)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute

    if args.sa1b is not None:
        kind, inputs = "sa1b", args.sa1b
    elif args.images is not None:
        kind, inputs = "images", args.images
    else:
        kind, inputs = "coco", [str(args.coco)]
    file_limit = {} if args.max_file_mb is None else {"max_file_bytes": _max_file_bytes(args.max_file_mb)}
    run_precompute(config_from_args(PrecomputeConfig, args, inputs=inputs, input_kind=kind, **file_limit))
    return 0


COMMAND = Subcommand(HELP, add_arguments, run)
