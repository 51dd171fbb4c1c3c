"""Benchmark training: samples/s, the data-wait / compute split, and the SRW share of a step.

    python scripts/bench_train.py --out bench_out/train.json            # small CPU config
    python scripts/bench_train.py --gpu --out bench_out/train_gpu.json  # + 1024 px, batch 64, bf16

The CPU config trains ``--student`` at 256 px on shards precomputed here from the sample
photos (a tiny random teacher). The SRW share is the time of the SRW-only work of a step
(``item_weights`` on the batch's stored avesim, and the weighted instead of the plain mean),
over the step time. With ``--gpu`` the same is measured at 1024 px, batch 64, bf16 AMP
(synthetic shards: random 1024-px images and fp16 embeddings), with peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from _bench import machine_description, seconds_per_call, write_json

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
from mobilesam_srw.engine.weighting import item_weights
from mobilesam_srw.sam.train import SamTrainConfig, train
from mobilesam_srw.srw import reweighted_mean


def srw_only_seconds(batch: int, patches: int, device: str, repeats: int = 50) -> float:
    """Time of the work SRW adds to a step: weights from avesim, and weighting the per-patch MSE."""
    avesim = torch.rand(batch, patches, device=device)
    per_patch = torch.rand(batch, patches, device=device, requires_grad=True)

    def srw_part():
        weights = item_weights(avesim, 0.5, "softmax")
        reweighted_mean(per_patch, weights).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    def plain_part():
        per_patch.mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return max(0.0, seconds_per_call(srw_part, repeats) - seconds_per_call(plain_part, repeats))


def run_training(shard_dir: Path, out: Path, **options) -> dict:
    config = SamTrainConfig(shards=[str(shard_dir)], out=out, progress=False, **options)
    train(config)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [line for line in lines if line["split"] == "train"][2:]  # skip warm-up steps
    return {
        "samples_per_s": statistics.median(line["samples_per_s"] for line in steady),
        "data_wait_fraction": statistics.median(line["data_wait_fraction"] for line in steady),
        "step_seconds": statistics.median(config.batch_size * config.grad_accum / line["samples_per_s"]
                                          for line in steady),
    }


def synthetic_shards(folder: Path, count: int, size: int = 1024) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    side = size // 16
    with wds.TarWriter(str(folder / "shard-000000.tar"), encoder=False) as writer:
        for index in range(count):
            image = rng.integers(0, 255, (size, size * 2 // 3, 3), dtype=np.uint8)
            embedding = rng.standard_normal((256, side, side)).astype(np.float32)
            avesim = rng.random((side, side)).astype(np.float32)
            size_hw = list(image.shape[:2])
            writer.write(shards.encode_sample(f"sa_{index}", shards.encode_image(image), embedding, avesim,
                                              {"original_size": size_hw, "input_size": size_hw}, "fp16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="tinyvit-5m")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="also run 1024 px, batch 64, bf16 on CUDA")
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench_out/train.json"))
    args = parser.parse_args()

    results = {"machine": machine_description()}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_sample_sa1b(work / "sa1b", num_images=args.images, images_per_tar=16, max_side=512)
        run_precompute(PrecomputeConfig(inputs=[str(work / "sa1b")], out=work / "shards", teacher="tiny",
                                        subset="all", workers=0, progress=False, device="cpu"))
        common = dict(student=args.student, batch_size=args.batch_size, epochs=1, max_steps=args.steps,
                      workers=args.workers, device="cpu")
        srw = run_training(work / "shards", work / "srw", loss="srw", **common)
        mse = run_training(work / "shards", work / "mse", loss="mse", **common)
        srw_seconds = srw_only_seconds(args.batch_size, 16 * 16, "cpu")
        results["cpu"] = {
            "config": f"{args.student} at 256 px, batch {args.batch_size}, fp32, {args.workers} loader worker(s)",
            "srw": srw, "mse": mse, "srw_only_seconds": srw_seconds,
            "srw_share_of_step": srw_seconds / srw["step_seconds"],
        }
        if args.gpu and torch.cuda.is_available():
            synthetic_shards(work / "shards_1024", count=64 * (args.gpu_steps + 2))
            torch.cuda.reset_peak_memory_stats()
            gpu = run_training(work / "shards_1024", work / "gpu", loss="srw", student="tinyvit-5m", batch_size=64,
                               epochs=1, max_steps=args.gpu_steps, workers=8, device="cuda", amp="bf16")
            gpu["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            gpu["srw_only_seconds"] = srw_only_seconds(64, 64 * 64, "cuda")
            gpu["srw_share_of_step"] = gpu["srw_only_seconds"] / gpu["step_seconds"]
            results["gpu"] = gpu
    print(results["machine"])
    for name in ("cpu", "gpu"):
        if name in results:
            print(name, json.dumps(results[name], indent=1))
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
