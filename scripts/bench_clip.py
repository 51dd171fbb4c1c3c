"""Benchmark the CLIP path: what stored shards save the loader, and SRW's share of a training step.

    python scripts/bench_clip.py --out bench_out/clip.json --markdown bench_out/clip.md

Loader (per sample, one process, ``--samples`` crops of the sample photos at 320 px, a RANDOM
ViT-B-32 teacher; its weights do not change the cost):

- ``stored``: read a sample of ``srw-clip precompute`` shards (PNG pixels + fp16 embedding), decode it,
  as ``ClipEmbeddingShards`` does in a training worker; ``stored-jpg`` the same with JPEG pixels;
- ``online``: read and decode the original JPEG from the img2dataset tar, open_clip's preprocessing,
  and the teacher's ``encode_image`` in batches of ``--batch``: what training would do without
  precompute, every epoch;
- ``online-stored``: ``--online``: decode the stored PNG and run the teacher.

SRW's share of a step: the time of the engine's SRW weights for one global batch (Eq. 4 over the
batch's teacher embeddings, Eq. 5), the only work SRW adds, over the time of the student's forward,
backward and AdamW step on the same batch. On a CPU the student step is measured on a small batch
and scaled linearly to the paper's 1024 (said in the output); the SRW part is measured at 1024.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from _bench import machine_description, seconds_per_call, write_json

from mobilesam_srw import shards
from mobilesam_srw.clip import shards as clip_shards
from mobilesam_srw.clip.dataset import ClipEmbeddingShards
from mobilesam_srw.clip.student import build_clip_student
from mobilesam_srw.clip.teacher import build_clip_teacher, normalize_pixels, save_teacher_checkpoint
from mobilesam_srw.data_prep.clip.img2dataset import discover
from mobilesam_srw.data_prep.clip.precompute import ClipPrecomputeConfig, run_clip_precompute
from mobilesam_srw.data_prep.clip.sample_data import write_sample_img2dataset
from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.engine.task import Targets
from mobilesam_srw.engine.weighting import step_weights
from mobilesam_srw.losses import feature_mse

PAPER_BATCH = 1024


def per_sample(fn, count: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the seconds per sample of ``fn()``, which handles ``count`` samples."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times)


def loader_costs(folder: Path, samples: int, batch: int) -> dict:
    tars = folder / "tars"
    write_sample_img2dataset(tars, samples, images_per_tar=samples, max_side=320)
    common = dict(img2dataset=[str(tars)], shard_size=samples, batch_size=batch, workers=0,
                  device="cpu", progress=False)
    teacher_file = folder / "teacher.safetensors"
    save_teacher_checkpoint(build_clip_teacher("ViT-B-32"), teacher_file)
    run_clip_precompute(ClipPrecomputeConfig(out=folder / "png", checkpoint=teacher_file, **common))
    run_clip_precompute(ClipPrecomputeConfig(out=folder / "jpg", checkpoint=teacher_file, image_format="jpg",
                                             **common))
    teacher = build_clip_teacher("ViT-B-32", teacher_file)
    datasets = {name: ClipEmbeddingShards(clip_shards.index_clip_shards(shards.shard_paths([folder / name])))
                for name in ("png", "jpg")}
    refs = [ref for unit in discover([tars]).units for ref in unit.scan()[0]]

    def read(dataset):
        return lambda: [dataset[index] for index in range(len(dataset))]

    def online():
        for start in range(0, len(refs), batch):
            pixels = [teacher.pixels(ref.load().image) for ref in refs[start : start + batch]]
            teacher.encode(np.stack(pixels))

    def online_stored():
        online_set = ClipEmbeddingShards(datasets["png"].samples, with_embedding=False)
        for start in range(0, len(online_set), batch):
            teacher.encode(torch.stack([online_set[i]["pixels"] for i in range(start, min(start + batch,
                                                                                            len(online_set)))]))

    costs = {
        "stored": per_sample(read(datasets["png"]), samples),
        "stored-jpg": per_sample(read(datasets["jpg"]), samples),
        "online": per_sample(online, samples, repeats=1),
        "online-stored": per_sample(online_stored, samples, repeats=1),
    }
    sizes = {name: shards.read_manifest(folder / name)["bytes"] / samples for name in ("png", "jpg")}
    return {"seconds_per_sample": costs, "bytes_per_sample": sizes}


def srw_share(student_name: str, batch: int, repeats: int) -> dict:
    """SRW weights of a global batch vs the student's step, per sample and scaled to the paper's batch."""
    ctx = DistributedContext()
    features = torch.randn(PAPER_BATCH, 512)
    srw_1024 = seconds_per_call(lambda: step_weights([Targets(features=features)], "batch", 0.5, "softmax", ctx,
                                                     PAPER_BATCH), repeats=repeats)
    student = build_clip_student(student_name, 512, 224)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    pixels = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    targets = torch.randn(batch, 512)
    weights = torch.full((batch,), 1.0 / batch)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD

    def step():
        loss = (weights * feature_mse(student(normalize_pixels(pixels, mean, std)), targets, dim=-1)).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_seconds = seconds_per_call(step, repeats=2)
    step_1024 = step_seconds / batch * PAPER_BATCH
    return {"student": student_name, "measured_batch": batch, "step_seconds": step_seconds,
            "step_seconds_at_1024_scaled": step_1024, "srw_seconds_at_1024": srw_1024,
            "srw_share": srw_1024 / (srw_1024 + step_1024)}


def markdown(result: dict) -> str:
    loader, share = result["loader"], result["srw"]
    costs, sizes = loader["seconds_per_sample"], loader["bytes_per_sample"]
    lines = ["# srw-clip benchmark", "", f"Machine: {result['machine']}.", "",
             f"## Loader ({result['samples']} samples, teacher ViT-B-32 at 224 px, batch {result['batch']})", "",
             "| source of a training sample | ms / sample | vs stored (PNG) |", "|---|---|---|"]
    for name, label in (("stored", "stored shard: PNG pixels + fp16 embedding"),
                        ("stored-jpg", "stored shard: JPEG pixels + fp16 embedding"),
                        ("online-stored", "`--online`: stored PNG + teacher forward"),
                        ("online", "no precompute: original JPEG, preprocessing, teacher forward")):
        lines.append(f"| {label} | {1000 * costs[name]:.2f} | {costs[name] / costs['stored']:.1f}x |")
    lines += ["", f"Shard bytes per sample: PNG {sizes['png'] / 1024:.0f} KiB, JPEG {sizes['jpg'] / 1024:.0f} KiB "
              "(224 x 224 pixels, tar headers and the 512-d fp16 embedding included).", "",
              "## SRW's share of a step", "",
              f"SRW weights for a global batch of {PAPER_BATCH} (Eq. 4 over 512-d teacher embeddings, Eq. 5): "
              f"{1000 * share['srw_seconds_at_1024']:.2f} ms. Student `{share['student']}` forward + backward + AdamW "
              f"at 224 px: {share['step_seconds']:.2f} s for a batch of {share['measured_batch']}, "
              f"{share['step_seconds_at_1024_scaled']:.0f} s scaled linearly to {PAPER_BATCH}. "
              f"SRW's share: {100 * share['srw_share']:.4f}% of a step.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/clip.json"))
    parser.add_argument("--markdown", type=Path, help="also write the result as markdown here")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="teacher batch of the online loader")
    parser.add_argument("--student", default="tiny_vit_5m_224")
    parser.add_argument("--student-batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        loader = loader_costs(Path(folder), args.samples, args.batch)
    result = {"machine": machine_description(), "samples": args.samples, "batch": args.batch, "loader": loader,
              "srw": srw_share(args.student, args.student_batch, repeats=20)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    text = markdown(result)
    if args.markdown:
        args.markdown.write_text(text)
    print(text, file=sys.stderr)


if __name__ == "__main__":
    main()
