"""Benchmark the precompute output: bytes per sample, int8 error, and the training-loader rate.

    python scripts/bench_precompute.py --out bench_out/precompute.json

(a) Bytes per sample of a 1024-px sample (256 x 64 x 64 embedding) stored fp16 / int8 / fp32.
(b) Relative L2 error of the int8 embedding against fp32.
(c) Samples/s on one core: reading our shards (tar -> JPEG decode at 1024 + embedding to
    tensors) against decoding an original-size SA-1B JPEG (2250 x 1500) and resizing it
    to 1024 as SamPredictor does, the path of a loader without precompute.

The embeddings come from a random tiny SAM at 1024 px on real photos: their statistics
are not ViT-H's, so the int8 error is indicative (ViT-H embeddings are also smooth per
patch; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
import webdataset as wds
from _bench import machine_description, write_json
from PIL import Image

from mobilesam_srw import shards
from mobilesam_srw.data_prep.sample_photos import PHOTOS
from mobilesam_srw.data_prep.sample_photos import photo as _photo
from mobilesam_srw.sam.teachers import sam_vit
from mobilesam_srw.srw import average_similarity


def full_size_jpegs(count: int) -> list[bytes]:
    """SA-1B-sized (2250 x 1500) JPEGs of real photos, quality 90 like SA-1B's."""
    jpegs = []
    for index in range(count):
        photo = Image.fromarray(_photo(PHOTOS[index % len(PHOTOS)])).resize((2250, 1500), Image.BICUBIC)
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def rate(fn, items, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            fn(item)
    return repeats * len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("bench_out/precompute_work"))
    parser.add_argument("--out", type=Path, default=Path("bench_out/precompute.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    torch.manual_seed(0)
    sam = sam_vit.build_sam(replace(sam_vit.SAM_CONFIGS["tiny"], image_size=1024))
    originals = full_size_jpegs(args.images)
    resized = [sam_vit.resize_longest_side(np.asarray(Image.open(io.BytesIO(j)).convert("RGB")), 1024)
               for j in originals]
    embeddings = [sam_vit.image_embeddings(sam, [image])[0].numpy() for image in resized]

    sizes, errors = {}, []
    args.work.mkdir(parents=True, exist_ok=True)
    for dtype in shards.EMBEDDING_DTYPES:
        path = args.work / f"{dtype}.tar"
        with wds.TarWriter(str(path), encoder=False, mtime=0) as writer:
            for index, (image, embedding) in enumerate(zip(resized, embeddings)):
                avesim = average_similarity(torch.from_numpy(embedding).flatten(1).T).view(64, 64).numpy()
                meta = {"original_size": list(image.shape[:2]), "input_size": list(image.shape[:2]), "annotations": []}
                writer.write(shards.encode_sample(f"sa_{index}", shards.encode_image(image), embedding, avesim, meta, dtype))
        sizes[dtype] = path.stat().st_size / args.images
        if dtype == "int8":
            for embedding in embeddings:
                decoded = shards.decode_embedding(shards.encode_embedding(embedding, "int8"))
                errors.append(float(np.linalg.norm(decoded - embedding) / np.linalg.norm(embedding)))
    embedding_bytes = {d: len(b"".join(shards.encode_embedding(embeddings[0], d).values())) for d in shards.EMBEDDING_DTYPES}

    def read_shard(path: str) -> None:
        for raw in wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples()):
            sample = shards.decode_sample(raw, as_float32=False)  # fp16 goes to the device as is
            torch.from_numpy(sample.image).permute(2, 0, 1), torch.from_numpy(sample.embedding)

    def full_size(jpeg: bytes) -> None:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        torch.from_numpy(sam_vit.resize_longest_side(image, 1024)).permute(2, 0, 1)

    shard_rates = {d: rate(read_shard, [str(args.work / f"{d}.tar")], args.repeats) * args.images
                   for d in ("fp16", "int8")}
    full_rate = rate(full_size, originals, args.repeats)
    results = {
        "machine": machine_description() + " (timed on 1 thread)",
        "bytes_per_sample": sizes,
        "embedding_bytes": embedding_bytes,
        "int8_relative_l2_error_mean": float(np.mean(errors)),
        "int8_relative_l2_error_max": float(np.max(errors)),
        "loader_samples_per_s": {"shards_fp16": shard_rates["fp16"], "shards_int8": shard_rates["int8"],
                                 "full_size_jpeg_decode_resize": full_rate},
        "loader_speedup_fp16": shard_rates["fp16"] / full_rate,
    }
    print(results["machine"])
    for dtype in shards.EMBEDDING_DTYPES:
        print(f"{dtype}: {sizes[dtype] / 2**20:.2f} MiB per sample (embedding alone {embedding_bytes[dtype] / 2**20:.2f} MiB)")
    print(f"int8 relative L2 error: mean {np.mean(errors):.4f}, max {np.max(errors):.4f}")
    print(f"loader: shards fp16 {shard_rates['fp16']:.1f} samples/s, int8 {shard_rates['int8']:.1f}; "
          f"full-size decode + resize {full_rate:.1f} samples/s; fp16 shards are {results['loader_speedup_fp16']:.1f}x")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
