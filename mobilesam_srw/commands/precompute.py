"""``srw-sam precompute``: SA-1B tars -> teacher-embedding shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesam_srw.shards import EMBEDDING_DTYPES

HELP = "encode SA-1B images with the SAM teacher into WebDataset shards (run once, before training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sa1b", nargs="+", required=True, metavar="PATH",
                        help="SA-1B tars, folders of tars or of sa_*.jpg/json pairs, or globs (quote them)")
    parser.add_argument("--teacher", default="vit_h", choices=["vit_h", "vit_l", "vit_b", "tiny"],
                        help="SAM image encoder (default vit_h); tiny = small random SAM that only exercises the pipeline")
    parser.add_argument("--checkpoint", type=Path, help="SAM checkpoint, e.g. sam_vit_h_4b8939.pth")
    parser.add_argument("--out", type=Path, required=True, help="output folder of shards and manifest.json")
    parser.add_argument("--subset", default="1%",
                        help="fraction of the input (whole tars: 1%% of SA-1B's 1000 tars is 10), 'all', or a file "
                             "listing tar names or sample keys (default 1%%)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice and a tiny teacher (default 0)")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per output shard (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per teacher pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="fp16", choices=EMBEDDING_DTYPES,
                        help="embedding storage: fp16 (2 MiB/image at 1024 px), int8 (+ per-patch scale, 1 MiB), fp32")
    parser.add_argument("--limit", type=int, help="encode at most N samples")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes (default min(4, cores))")
    parser.add_argument("--image-size", type=int, default=256, help="input size of a new tiny teacher (default 256)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.data_prep.precompute import PrecomputeConfig, run_precompute

    config = PrecomputeConfig(
        inputs=args.sa1b, out=args.out, teacher=args.teacher, checkpoint=args.checkpoint, subset=args.subset,
        seed=args.seed, shard_size=args.shard_size, batch_size=args.batch_size, device=args.device,
        dtype=args.dtype, limit=args.limit, tiny_image_size=args.image_size, progress=not args.no_progress,
    )
    if args.workers is not None:
        config.workers = args.workers
    run_precompute(config)
    return 0
