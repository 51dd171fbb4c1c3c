"""One command that measures the toolkit on a GPU: training, precompute, evaluation and NCCL DDP.

No data or weights are needed (random weights, generated images). Under 8 minutes on one H100/H200:

    python scripts/gpu_check.py --out gpu_check.json

writes one JSON file and prints a table. ``--smoke`` runs every path at toy sizes on the CPU (to check
the script itself; its figures mean nothing). Sections:

- training: ``tinyvit-5m`` at 1024 px, global batch 64 (micro-batches halved on out-of-memory), bf16,
  with and without SRW, with and without ``torch.compile``: step time, images/s, peak memory,
  data-wait fraction, and model FLOPs utilisation (FLOPs per image counted by PyTorch's FLOP counter,
  forward and backward, over the GPU's dense bf16 peak, which the output names);
- precompute: a random ViT-H at 1024 px in bf16 and fp32: images/s, FLOPs utilisation, and whether the
  bf16 embeddings stay within fp16 storage's rounding error (relative L2 against fp32);
- evaluation: seconds per image and model for a 32 x 32 point grid on a 1500 x 2250 image (SAM's
  prompt encoder and mask decoder on a 64 x 64 embedding);
- DDP: a 1-GPU torchrun run of two training steps over NCCL (the path gloo tests cannot reach).

Training, evaluation and DDP run the real commands' library calls on real shards: sample photos encoded
by precompute with a random tiny SAM teacher at 1024 px (the teacher's cost is measured separately).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.task import SamTrainConfig
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam
from mobilesam_srw.sam.train import train

sys.path.insert(0, str(Path(__file__).parent))
from _bench import machine_description, write_json  # noqa: E402

# Dense bf16 peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
BF16_PEAKS = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
              "A10": 125e12, "RTX 4090": 165e12}


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_PEAKS.items() if key in name), None)


def prepare_shards(args, work: Path) -> tuple[Path, Path]:
    """Training shards (``args.samples`` sample photos) and one evaluation image of ``args.eval_image``, made
    by the real precompute with a random tiny SAM teacher at ``args.size`` (its ViT is cheap; the shards,
    the loader, the student and the loss are the real ones)."""
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b

    train_shards, eval_shards = work / "shards", work / "eval_shards"
    write_sample_sa1b(work / "sa1b", num_images=args.samples, images_per_tar=64, seed=0, max_side=1500)
    write_sample_sa1b(work / "sa1b_eval", num_images=1, images_per_tar=1, seed=1, max_side=max(args.eval_image),
                      first_tar=1000)
    common = dict(teacher="tiny", subset="all", device=args.device, batch_size=16, workers=args.workers,
                  progress=False, tiny_image_size=args.size)
    run_precompute(PrecomputeConfig(inputs=[str(work / "sa1b")], out=train_shards, **common))
    run_precompute(PrecomputeConfig(inputs=[str(work / "sa1b_eval")], out=eval_shards,
                                    checkpoint=train_shards / "teacher_tiny.pth", **common))
    return train_shards, eval_shards


def student_flops_per_image(args, device: torch.device) -> float:
    student = build_student(args.student, args.size).to(device)
    images = torch.randn(1, 3, args.size, args.size, device=device)
    with FlopCounterMode(display=False) as counter:
        student(images).float().square().mean().backward()
    return float(counter.get_total_flops())


def train_config(args, shards: Path, out: Path, loss: str, batch: int, accum: int, compile_: bool,
                 steps: int) -> SamTrainConfig:
    return SamTrainConfig(out=out, shards=[str(shards)], student=args.student, loss=loss, batch_size=batch,
                          grad_accum=accum, amp=args.amp, compile=compile_, device=args.device, workers=args.workers,
                          progress=False, epochs=1000, max_steps=steps, save_every=10**6)


def measure_training(args, shards: Path, work: Path, loss: str, compile_: bool, peak: float | None,
                     flops: float) -> dict:
    """``srw-sam train`` itself; step figures are the mean of the steps after the warm-up ones."""
    batch, accum = args.batch, 1
    while True:
        out = work / f"run_{loss}_{'compiled' if compile_ else 'eager'}_{batch}x{accum}"
        try:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            train(train_config(args, shards, out, loss, batch, accum, compile_, args.warmup + args.steps))
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch, accum = batch // 2, accum * 2
            torch.cuda.empty_cache()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if line["split"] == "train"][args.warmup:]
    images_per_s = float(np.mean([line["samples_per_s"] for line in steps]))
    return {"loss": loss, "compile": compile_, "micro_batch": batch, "grad_accum": accum,
            "step_s": args.batch / images_per_s, "images_per_s": images_per_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None,
            "data_wait_fraction": float(np.mean([line["data_wait_fraction"] for line in steps])),
            "mfu": flops * images_per_s / peak if peak else None, "run": str(out)}


@torch.no_grad()
def measure_precompute(args, device: torch.device, peak: float | None) -> dict:
    config = SAM_CONFIGS[args.teacher] if args.teacher != "tiny" else replace(SAM_CONFIGS["tiny"], image_size=args.size)
    encoder = build_sam(config).image_encoder.to(device).eval()
    images = torch.randn(args.precompute_batch, 3, config.image_size, config.image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        encoder(images[:1])
    flops = float(counter.get_total_flops())
    results, embeddings = {"teacher": args.teacher, "flops_per_image": flops}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def run():
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return encoder(images).float()
        embeddings[name] = run()  # warm-up, and the embeddings compared below
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.precompute_repeats):
            run()
        synchronize(device)
        per_s = args.precompute_batch * args.precompute_repeats / (time.perf_counter() - started)
        results[name] = {"images_per_s": per_s, "mfu": flops * per_s / peak if peak else None}
    reference = embeddings["fp32"]
    relative = lambda x: ((x - reference).norm() / reference.norm()).item()  # noqa: E731
    results["bf16_relative_l2"] = relative(embeddings["bf16"])
    results["fp16_storage_relative_l2"] = relative(reference.half().float())
    results["bf16_within_fp16_storage_error"] = results["bf16_relative_l2"] <= results["fp16_storage_relative_l2"]
    return results


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_eval(args, eval_shards: Path, run: Path) -> dict:
    """``srw-sam eval --grid N`` on one image of ``args.eval_image``: the teacher's masks and one student's."""
    from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate

    started = time.perf_counter()
    evaluate(EvalConfig(shards=[str(eval_shards)], students=[run], out=eval_shards.parent / "eval_report",
                        grids=[args.grid], device=args.device, progress=False))
    seconds = time.perf_counter() - started
    return {"grid": args.grid, "image": list(args.eval_image), "models": 2,
            "seconds_per_image_and_model": seconds / 2}


def measure_ddp(args, shards: Path, work: Path) -> dict:
    """``torchrun --nproc-per-node 1 -m mobilesam_srw train``: two steps over NCCL on a GPU (gloo on a CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", "29601",
               "-m", "mobilesam_srw", "train", "--shards", str(shards), "--out", str(work / "run_ddp"),
               "--student", args.student, "--batch-size", str(max(1, args.batch // 8)), "--max-steps", "2",
               "--device", args.device, "--workers", str(args.workers), "--no-progress", "--amp", args.amp]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    metrics = work / "run_ddp" / "metrics.jsonl"
    losses = [json.loads(l)["loss"] for l in metrics.read_text().splitlines()] if metrics.is_file() else []
    return {"returncode": result.returncode, "seconds": time.perf_counter() - started,
            "backend": "nccl" if args.device.startswith("cuda") else "gloo", "losses": losses,
            **({} if result.returncode == 0 else {"stderr_tail": result.stderr[-2000:]})}


def print_table(report: dict) -> None:
    print(f"\n{report['machine']}; bf16 peak: {report['gpu']} {report['bf16_peak_tflops'] or 'unknown'} TFLOP/s")
    print("training (tinyvit-5m):")
    for row in report["training"]:
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] else "n/a"
        memory = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] else "n/a"
        print(f"  loss {row['loss']:4s} compile {str(row['compile']):5s} {row['micro_batch']}x{row['grad_accum']}: "
              f"{row['step_s']:.3f} s/step, {row['images_per_s']:.1f} img/s, MFU {mfu}, {memory}, "
              f"data wait {100 * row['data_wait_fraction']:.1f}%")
    pre = report["precompute"]
    for name in ("fp32", "bf16"):
        mfu = f"{100 * pre[name]['mfu']:.1f}%" if pre[name]["mfu"] else "n/a"
        print(f"precompute {pre['teacher']} {name}: {pre[name]['images_per_s']:.2f} img/s, MFU {mfu}")
    print(f"  bf16 relative L2 {pre['bf16_relative_l2']:.2e} vs fp16 storage {pre['fp16_storage_relative_l2']:.2e}: "
          f"{'within' if pre['bf16_within_fp16_storage_error'] else 'NOT within'}")
    ev = report["eval"]
    print(f"eval: {ev['seconds_per_image_and_model']:.2f} s per image and model at {ev['grid']}x{ev['grid']} points")
    ddp = report["ddp"]
    print(f"ddp: exit {ddp['returncode']}, backend {ddp['backend']}, losses {ddp['losses']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--work", type=Path, default=Path("gpu_check_work"), help="shards and runs (deletable)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, to check the script")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    big = dict(device="cuda", student="tinyvit-5m", size=1024, batch=64, steps=8, warmup=3, workers=8, amp="bf16",
               teacher="vit_h", samples=256, precompute_batch=8, precompute_repeats=5, grid=32,
               eval_image=(1500, 2250))
    small = dict(device="cpu", student="tinyvit-micro", size=256, batch=4, steps=2, warmup=1, workers=0, amp="off",
                 teacher="tiny", samples=8, precompute_batch=2, precompute_repeats=1, grid=4, eval_image=(300, 450))
    for key, value in (small if args.smoke else big).items():
        setattr(args, key, value)
    if args.work.exists():
        shutil.rmtree(args.work)
    device = torch.device(args.device)
    gpu, peak = bf16_peak(device)
    report = {"machine": machine_description(), "gpu": gpu, "bf16_peak_tflops": peak / 1e12 if peak else None,
              "smoke": args.smoke}
    started = time.perf_counter()
    shards, eval_shards = prepare_shards(args, args.work)
    report["prepare_s"] = time.perf_counter() - started
    flops = student_flops_per_image(args, device)
    report["student_flops_per_image_fwd_bwd"] = flops
    compiles = [False] if args.no_compile or args.smoke else [False, True]
    report["training"] = [measure_training(args, shards, args.work, loss, compile_, peak, flops)
                          for compile_ in compiles for loss in ("srw", "mse")]
    report["precompute"] = measure_precompute(args, device, peak)
    report["eval"] = measure_eval(args, eval_shards, Path(report["training"][0]["run"]))
    report["ddp"] = measure_ddp(args, shards, args.work)
    report["total_s"] = time.perf_counter() - started
    write_json(args.out, report)
    print_table(report)
    print(f"\nwrote {args.out} in {report['total_s']:.0f} s")


if __name__ == "__main__":
    main()
