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

With ``--vs-sam``, instead: SAM's own mask path against ours, on the same stored embeddings, in one run.

    python scripts/bench_eval.py --vs-sam --out bench_out/eval_vs_sam.json

LiteMedSAM's real weights embed real photos resized to SA-1B's 1500 x 2250 (stored as fp16, as shards
hold them); two ``tinyvit-micro`` students at stride 4 (64 x 64, the teacher's grid), started at the
teacher's output statistics, one random and one briefly trained (``--train-steps``) on the teacher's
embeddings. At grid 32 (``--prompt-batches`` of its 16 batches of 64 prompts, spread over the image),
each batch is scored by both paths, in alternating order: SAM's (``SamPredictor.predict_torch``: its
decoder, ``postprocess_masks`` to 1500 x 2250, thresholded; IoU of the full masks) and ours
(``eval --masks sparse``: the sparse decoder, SAM's decoder to float rounding, the exact sparse
upscale, the teacher's masks once for both students). It prints its figures as JSON on its last line:
seconds per image and model for each path (for the whole 32 x 32 grid), ``speedup``, the decoder's
share, ``max_abs_miou_diff`` between the paths' mIoUs (fractions; target <= 1e-6), whether every
prompt's IoU is identical (``ious_identical``), and if not how many differ and by at most how much.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
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


class LoadSampler:
    """The 1-minute load average, sampled every few seconds while a benchmark runs (the machine is shared)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"mean": round(float(np.mean(self.samples)), 2), "min": round(min(self.samples), 2),
                "max": round(max(self.samples), 2)}


class Stopwatch:
    """Seconds spent in a module's forward (the mask decoder), via hooks; ``bucket`` says whose."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds: dict[str, float] = {}
        self.bucket = ""
        self._started = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def time_calls(self, cls: type) -> None:
        """Also time every call of ``cls`` instances (their ``__call__``)."""
        call = cls.__call__

        def timed(instance, *args, **kwargs):
            self._pre()
            try:
                return call(instance, *args, **kwargs)
            finally:
                self._post()

        cls.__call__ = timed

    def _pre(self, *_) -> None:
        self._started = time.perf_counter()

    def _post(self, *_) -> None:
        self.seconds[self.bucket] = self.seconds.get(self.bucket, 0.0) + time.perf_counter() - self._started


def bench_samples(teacher, images: int, size: tuple[int, int]) -> list:
    """Real photos resized to ``size``, embedded by the teacher and stored as fp16, as precompute does."""
    import cv2

    from mobilesam_srw.data_prep.sample_photos import PHOTOS, photo
    from mobilesam_srw.shards import ShardSample
    from mobilesam_srw.srw import average_similarity

    samples = []
    for index in range(images):
        name = PHOTOS[index % len(PHOTOS)]
        image = photo(name)
        image = cv2.resize(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2), size[::-1],
                           interpolation=cv2.INTER_CUBIC)
        resized = teacher.resize(image)
        embedding = teacher.embed([resized])[0].half()
        avesim = average_similarity(embedding.float().flatten(1).T[None])[0].view(embedding.shape[1:])
        samples.append(ShardSample(key=f"{name}_{index}", image=resized, embedding=embedding.numpy(),
                                   avesim=avesim.numpy(), meta={"original_size": list(size),
                                                                "input_size": list(resized.shape[:2])}))
    return samples


def bench_students(teacher, samples: list, train_steps: int) -> dict:
    """``tinyvit-micro`` at stride 4 (the teacher's 64 x 64 grid) started at the teacher's output statistics:
    one random, one trained ``train_steps`` MSE steps on the samples' embeddings."""
    from mobilesam_srw.losses import feature_mse
    from mobilesam_srw.sam.preprocessing import student_input
    from mobilesam_srw.sam.student import match_output_statistics
    from mobilesam_srw.sam.transforms import pad_image

    size = teacher.spec.input_size
    targets = torch.stack([torch.from_numpy(s.embedding).float() for s in samples])
    mean, std = targets.mean((0, 2, 3)), targets.std((0, 2, 3))
    images = torch.stack([pad_image(s.image, size) for s in samples])
    sizes = torch.tensor([s.image.shape[:2] for s in samples])
    students = {}
    for seed, (label, steps) in enumerate((("random", 0), ("trained", train_steps))):
        torch.manual_seed(seed)
        student = build_student("tinyvit-micro", size, stride=4)
        with torch.no_grad():
            match_output_statistics(student, mean, std)
        optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
        inputs = student_input(teacher.preprocessing, images, sizes, size)
        for _ in range(steps):
            loss = feature_mse(student(inputs), targets, dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        students[label] = student.eval()
    return students


def vs_sam(images: int, prompt_batches: int, train_steps: int, sam_heap: bool = True, grid: int = 32,
           batch_size: int = 64) -> dict:
    """SAM's mask path against ours at ``grid``, on LiteMedSAM's real weights (see the module docstring)."""
    from mobilesam_srw.eval.sam.decoder import SparseDecoder
    from mobilesam_srw.eval.sam.grid import batch_ious, grid_points
    from mobilesam_srw.eval.sam.heap import reused_heap
    from mobilesam_srw.eval.sam.tiles import MaskTiler
    from mobilesam_srw.sam.prompt_models import PromptModels
    from mobilesam_srw.sam.teachers.loading import load_teacher

    size = (1500, 2250)
    started = time.perf_counter()
    teacher = load_teacher("litemedsam")
    samples = bench_samples(teacher, images, size)
    students = bench_students(teacher, samples, train_steps)
    models = PromptModels.build(teacher.sam, students, torch.device("cpu"), teacher.preprocessing)
    setup_s = time.perf_counter() - started
    stopwatch = Stopwatch(teacher.sam.mask_decoder)
    stopwatch.time_calls(SparseDecoder)  # our path's decoder (it runs the MaskDecoder's modules, not its forward)
    tiler = MaskTiler(teacher.sam)
    points = grid_points(grid, size)
    batches = -(-len(points) // batch_size)
    chosen = sorted({round(i) for i in np.linspace(0, batches - 1, prompt_batches)})
    paths = ("sam", "ours", "sam_reused_heap") if sam_heap else ("sam", "ours")
    seconds = {path: 0.0 for path in paths}
    ious = {path: {} for path in paths}
    for sample in samples:
        predictors = models.install(sample)
        (_, teacher_predictor), *student_predictors = predictors.items()
        for order, batch in enumerate(chosen):
            prompts = points[batch * batch_size : (batch + 1) * batch_size]
            for path in (paths if order % 2 == 0 else paths[::-1]):  # alternating, against drifting load
                stopwatch.bucket = path
                with reused_heap(path != "sam"):
                    begin = time.perf_counter()
                    for by_run in batch_ious(teacher_predictor, student_predictors, prompts, "all", batch_size,
                                             tiler if path == "ours" else None):
                        for run, values in by_run.items():
                            ious[path].setdefault(run, []).append(values.flatten())
                    seconds[path] += time.perf_counter() - begin
    model_count = 1 + len(students)
    scale = batches / len(chosen) / (images * model_count)  # -> seconds per image and model, whole grid
    miou = {path: {run: torch.cat(values).double().mean().item() for run, values in by_run.items()}
            for path, by_run in ious.items()}
    identical = all(torch.equal(torch.cat(ious["sam"][run]), torch.cat(ious["ours"][run])) for run in students)
    iou_diff = max((torch.cat(ious["sam"][run]) - torch.cat(ious["ours"][run])).abs().max().item() for run in students)
    differing = sum((torch.cat(ious["sam"][run]) != torch.cat(ious["ours"][run])).sum().item() for run in students)
    figures = {
        "grid": grid, "image_size": list(size), "images": images, "teacher": "litemedsam",
        "students": {label: f"tinyvit-micro stride 4, {'random' if label == 'random' else f'{train_steps} MSE steps'}"
                     for label in students},
        "prompt_batches": f"{len(chosen)} of {batches} (batches {chosen}) x {batch_size} prompts",
        "sam_s_per_image_model": seconds["sam"] * scale, "ours_s_per_image_model": seconds["ours"] * scale,
        "speedup": seconds["sam"] / seconds["ours"],
        "decoder_s_per_image_model": {path: stopwatch.seconds.get(path, 0.0) * scale for path in seconds},
        "decoder_share": {path: stopwatch.seconds.get(path, 0.0) / seconds[path] for path in seconds},
        "miou": miou, "max_abs_miou_diff": max(abs(miou[path][run] - miou["sam"][run])
                                               for path in paths for run in students),
        "ious_identical": identical, "max_abs_iou_diff": iou_diff, "ious_differing": differing,
        "ious_compared": sum(len(torch.cat(ious["sam"][run])) for run in students), "frames_calibrated": sum(f is not None for f in tiler._frames.values()),
        "setup_s": setup_s,
    }
    if sam_heap:  # the same memory reuse given to SAM's path: what the sparse masks alone gain
        figures["sam_reused_heap_s_per_image_model"] = seconds["sam_reused_heap"] * scale
        figures["speedup_same_heap"] = seconds["sam_reused_heap"] / seconds["ours"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="default: 2, or 1 with --vs-sam")
    parser.add_argument("--full", action="store_true", help="end to end at 1024 px (for a GPU)")
    parser.add_argument("--vs-sam", action="store_true", help="SAM's mask path against ours (see above)")
    parser.add_argument("--prompt-batches", type=int, default=2, help="--vs-sam: batches of the 16 at grid 32")
    parser.add_argument("--train-steps", type=int, default=10, help="--vs-sam: the trained student's steps")
    parser.add_argument("--no-sam-heap", action="store_true",
                        help="--vs-sam: skip timing SAM's path a second time with ours' memory reuse")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.vs_sam:
        started = time.perf_counter()
        with LoadSampler() as load:
            results = vs_sam(args.images or 1, args.prompt_batches, args.train_steps, not args.no_sam_heap)
        results.update(machine=machine_description(), load_average_1min=load.summary(),
                       total_s=time.perf_counter() - started,
                       command="python scripts/bench_eval.py --vs-sam " + " ".join(
                           f"--{k.replace('_', '-')} {v}" for k, v in (("images", args.images or 1),
                                                                      ("prompt_batches", args.prompt_batches),
                                                                      ("train_steps", args.train_steps))))
        print(f"{results['machine']}; load {results['load_average_1min']}")
        print(f"grid 32 at 1500 x 2250, {results['prompt_batches']}: SAM's path "
              f"{results['sam_s_per_image_model']:.1f} s, ours {results['ours_s_per_image_model']:.1f} s per image and "
              f"model: {results['speedup']:.2f}x ({results.get('speedup_same_heap', float('nan')):.2f}x against SAM's "
              f"path with the same memory reuse); mIoU difference {results['max_abs_miou_diff']}")
        write_json(args.out or Path("bench_out/eval_vs_sam.json"), results)
        print(json.dumps(results))
        return
    device = resolve_device(args.device)
    args.images = args.images or 2
    args.out = args.out or Path("bench_out/eval.json")

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
