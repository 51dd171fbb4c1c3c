"""``srw-sam train``: distil a student from precompute shards."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "distil a MobileSAM student from precomputed teacher embeddings with patch-wise SRW"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="precompute shards: globs (quote them), folders, files")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, student.pt)")
    parser.add_argument("--tau", type=float, default=0.5, help="SRW temperature of Eq. 5 (default 0.5)")
    parser.add_argument("--loss", choices=["srw", "mse"], default="srw",
                        help="srw: patch-wise re-weighted MSE; mse: plain MSE, the MobileSAM baseline")
    parser.add_argument("--normalizer", choices=["softmax", "reverse", "sum"], default="softmax",
                        help="weights from avesim: softmax (Eq. 5), reverse (Table 7), sum (Eq. 7)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank and micro-step (default 64)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimiser step (default 1)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    parser.add_argument("--warmup", type=float, default=0.02,
                        help="linear warmup: a fraction of all steps (< 1) or steps (>= 1); then cosine to 0 (default 0.02)")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                        help="mixed precision (default auto: bf16 on GPUs that support it, off on CPU)")
    parser.add_argument("--student", default="tinyvit-5m", help="tinyvit-5m (MobileSAM), tinyvit-micro, or timm:<name>")
    parser.add_argument("--init", type=Path, help="initial weights: a run folder, student.pt, or a MobileSAM checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="data loading processes per rank (default min(4, cores))")
    parser.add_argument("--val-shards", nargs="+", help="held-out shards, evaluated after each epoch")
    parser.add_argument("--ignore-padding", action="store_true",
                        help="patches that lie only on SAM's padding get weight 0 (others renormalised)")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    parser.add_argument("--max-steps", type=int, help="stop after N steps (the schedule still spans all epochs)")
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.sam.train import TrainConfig, train

    config = TrainConfig(
        shards=args.shards, out=args.out, tau=args.tau, loss=args.loss, normalizer=args.normalizer,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
        warmup=args.warmup, grad_accum=args.grad_accum, amp=args.amp, student=args.student, init=args.init,
        resume=args.resume, seed=args.seed, val_shards=args.val_shards, ignore_padding=args.ignore_padding,
        save_every=args.save_every, max_steps=args.max_steps, device=args.device, progress=not args.no_progress,
    )
    if args.workers is not None:
        config.workers = args.workers
    train(config)
    return 0
