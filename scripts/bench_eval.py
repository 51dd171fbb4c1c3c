"""Benchmark evaluation: what stored teacher embeddings save, and what ``eval --grid 32`` costs.

    python scripts/bench_eval.py --out bench_out/eval.json

(a) Ground truth per image: reading a stored 256 x 64 x 64 fp16 teacher embedding from a shard, against
    running a ViT-B image encoder (random weights, 1024 px) to produce it: the cost eval avoids.
(b) SAM's decoder at the released size (64 x 64 embedding, 1500 x 2250 original): seconds
    per batch of 64 point prompts (mask upscaling included), and the implied time per
    model and image at 32 x 32 points (16 batches).
(c) ``eval --grid 32`` end to end, images/s, with one student: at 256 px here (tiny teacher,
    ``tinyvit-micro``), or with ``--full`` at 1024 px (tiny teacher at 1024, ``tinyvit-5m``;
    meant for a GPU: about 4 minutes per image on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _bench import machine_description, seconds_per_call, write_json

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
from mobilesam_srw.distributed import resolve_device
from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.student import build_student
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam
from mobilesam_srw.tar_index import index_tar


def stored_embedding_seconds(folder: Path, repeats: int = 20) -> float:
    """Read and decode one stored 256 x 64 x 64 fp16 embedding and its avesim from a shard, as eval does."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    shard = folder / "shard-000000.tar"
    embedding = rng.standard_normal((256, 64, 64)).astype(np.float32)
    with wds.TarWriter(str(shard), encoder=False) as writer:
        writer.write(shards.encode_sample("sa_1", shards.encode_image(np.zeros((683, 1024, 3), np.uint8)), embedding,
                                          rng.random((64, 64)).astype(np.float32),
                                          {"original_size": [683, 1024], "input_size": [683, 1024]}, "fp16"))
    members, _ = index_tar(shard)

    def read():
        raw = {field: members[f"sa_1.{field}"].read() for field in (shards.EMBEDDING_FIELD, shards.AVESIM_FIELD)}
        return torch.from_numpy(shards.decode_embedding(raw)), shards.load_npy(raw[shards.AVESIM_FIELD])

    return seconds_per_call(read, repeats)


@torch.no_grad()
def vit_b_encoder_seconds(device: torch.device) -> float:
    encoder = build_sam(SAM_CONFIGS["vit_b"]).image_encoder.to(device)
    image = torch.randn(1, 3, 1024, 1024, device=device)

    def run():
        encoder(image)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return seconds_per_call(run, repeats=2 if device.type == "cpu" else 10)


def decoder_batch_seconds(device: torch.device) -> float:
    torch.manual_seed(0)
    predictor = EmbeddingPredictor(build_sam(replace(SAM_CONFIGS["tiny"], image_size=1024)).to(device))
    predictor.set_embedding(torch.randn(256, 64, 64), (1500, 2250), (683, 1024))
    points = np.random.default_rng(0).random((64, 2)) * [2250, 1500]

    def run():
        next(predictor.point_batches(points))
        if device.type == "cuda":
            torch.cuda.synchronize()

    return seconds_per_call(run, repeats=1 if device.type == "cpu" else 10)


def end_to_end(work: Path, full: bool, images: int, device: str) -> dict:
    size, student_name = (1024, "tinyvit-5m") if full else (256, "tinyvit-micro")
    write_sample_sa1b(work / "sa1b", num_images=images, images_per_tar=images, max_side=1500 if full else 512)
    run_precompute(PrecomputeConfig(inputs=[str(work / "sa1b")], out=work / "shards", teacher="tiny", subset="all",
                                    tiny_image_size=size, workers=0, progress=False, device=device))
    run = work / "run"
    checkpoint.save(run / checkpoint.STUDENT_FILE, checkpoint.student_record(build_student(student_name, size)))
    started = time.perf_counter()
    evaluate(EvalConfig(shards=[str(work / "shards")], students=[run], out=work / "report", grids=[32],
                        progress=False, device=device))
    seconds = time.perf_counter() - started
    return {"input_size": size, "student": student_name, "images": images, "seconds": seconds,
            "images_per_s": images / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="end to end at 1024 px (for a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench_out/eval.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)

    results = {"machine": machine_description()}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        results["end_to_end_grid32"] = end_to_end(work, args.full, args.images, str(device))
        results["stored_embedding_s"] = stored_embedding_seconds(work / "stored_1024")
    results["vit_b_encoder_s"] = vit_b_encoder_seconds(device)
    results["ground_truth_speedup"] = results["vit_b_encoder_s"] / results["stored_embedding_s"]
    batch = decoder_batch_seconds(device)
    results["decoder_64_prompts_s_at_64x64"] = batch
    results["decoder_per_model_image_grid32_s"] = 16 * batch
    print(results["machine"])
    print(f"ground truth per image: stored embedding {results['stored_embedding_s'] * 1e3:.1f} ms vs ViT-B encoder "
          f"{results['vit_b_encoder_s']:.2f} s: {results['ground_truth_speedup']:.0f}x less")
    print(f"SAM decoder at 64x64: {batch:.2f} s per 64 prompts -> {16 * batch:.1f} s per model and image at 32x32")
    e2e = results["end_to_end_grid32"]
    print(f"eval --grid 32 end to end at {e2e['input_size']} px ({e2e['student']}): {e2e['images_per_s']:.3f} img/s")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
