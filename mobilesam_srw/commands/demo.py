"""``srw-sam demo``: the whole pipeline on a fresh machine, from scikit-image's photos to a report.

Builds an SA-1B-format mini data set (train and val), precomputes a tiny random teacher's
embeddings, trains a student with plain MSE (MobileSAM) and one with SRW (same seed and
steps), evaluates both at three point grids, draws heatmaps and mask comparisons, and
writes ``report.md``. It wires the stages together, so it lives with the CLI.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HELP = "run the whole pipeline on bundled sample photos with a random tiny teacher, and write a report"
RANDOM_TEACHER_NOTE = (
    "**The teacher is a randomly initialised tiny SAM.** These numbers show that the pipeline runs end to "
    "end (data, teacher embeddings, distillation, evaluation, figures); they say nothing about SRW's gain. "
    "For the paper's setting use SA-1B, the ViT-H checkpoint and the recipe in README.md."
)


@dataclass
class DemoConfig:
    """Sizes of the demo (the defaults finish within minutes on a 2-core CPU).

    Args:
        out: output folder.
        train_images, val_images: sample photos per split.
        epochs, batch_size: training of each student (tinyvit-micro, 256 px).
        tau: SRW temperature.
        grids: point grids of the evaluation.
        figures: images drawn in heatmaps and comparisons.
        seed: seeds data, teacher and students.
        progress: progress bars.
    """

    out: Path = Path("demo_out")
    train_images: int = 24
    val_images: int = 3
    epochs: int = 10
    batch_size: int = 4
    tau: float = 0.5
    grids: list[int] = field(default_factory=lambda: [5, 16, 32])
    figures: int = 2
    seed: int = 0
    progress: bool = True


def _stage(name: str, timings: dict[str, float]):
    class _Timer:
        def __enter__(self):
            print(f"demo: {name} ...", file=sys.stderr, flush=True)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.start

    return _Timer()


def run_demo(config: DemoConfig) -> Path:
    """Run every stage into ``config.out``; returns the report's path."""
    from mobilesam_srw.data_prep.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.data_prep.sample_data import write_sample_sa1b
    from mobilesam_srw.eval.evaluate import EvalConfig, evaluate
    from mobilesam_srw.sam.train import TrainConfig, train
    from mobilesam_srw.sam.teacher import TINY_TEACHER_FILE
    from mobilesam_srw.shards import shard_paths
    from mobilesam_srw.viz.compare import draw_comparisons
    from mobilesam_srw.viz.heatmap import draw_heatmaps

    out, timings = Path(config.out), {}
    data, shards_dir, runs = out / "sa1b", out / "shards", out / "runs"
    with _stage("sample data (scikit-image photos in SA-1B format)", timings):
        write_sample_sa1b(data / "train", config.train_images, images_per_tar=8, seed=config.seed, max_side=512)
        write_sample_sa1b(data / "val", config.val_images, images_per_tar=8, seed=config.seed + 1, max_side=512,
                          first_tar=100)
    common = dict(teacher="tiny", subset="all", shard_size=8, batch_size=4, workers=0, seed=config.seed,
                  device="cpu", progress=config.progress)
    with _stage("precompute (tiny random teacher)", timings):
        run_precompute(PrecomputeConfig(inputs=[str(data / "train")], out=shards_dir / "train", **common))
        teacher_file = shards_dir / "train" / TINY_TEACHER_FILE
        run_precompute(PrecomputeConfig(inputs=[str(data / "val")], out=shards_dir / "val", checkpoint=teacher_file,
                                        **common))
    for loss in ("mse", "srw"):
        with _stage(f"train {loss}", timings):
            train(TrainConfig(shards=[str(shards_dir / "train")], out=runs / loss, loss=loss, tau=config.tau,
                              student="tinyvit-micro", epochs=config.epochs, batch_size=config.batch_size,
                              workers=0, seed=config.seed, device="cpu", progress=config.progress,
                              val_shards=[str(shards_dir / "val")]))
    val_shards = shard_paths([shards_dir / "val"])
    with _stage("evaluate", timings):
        summary = evaluate(EvalConfig(shards=val_shards, students=[runs / "mse", runs / "srw"], out=out / "eval",
                                      sam_checkpoint=teacher_file, grids=config.grids, device="cpu",
                                      progress=config.progress))
    with _stage("figures", timings):
        heatmaps = draw_heatmaps(val_shards, config.tau, out / "figures", first=config.figures)
        # a random teacher's masks rarely pass SAM's quality filters: keep them all for the picture
        comparisons = draw_comparisons(val_shards, [runs / "mse", runs / "srw"], out / "figures", teacher_file,
                                       grid=16, first=config.figures, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    report = write_demo_report(out, config, summary, heatmaps + comparisons, timings)
    print(f"demo: done in {sum(timings.values()):.0f} s; report: {report}", file=sys.stderr)
    return report


def write_demo_report(out: Path, config: DemoConfig, summary: dict, figures: list[Path], timings: dict) -> Path:
    from mobilesam_srw.atomic import atomic_path

    table = (out / "eval" / "table.md").read_text()
    pngs = [path for path in figures if path.suffix == ".png"]
    lines = [
        "# mobilesam-srw demo report", "", RANDOM_TEACHER_NOTE, "",
        "## Setup", "",
        f"- Data: {config.train_images} training and {config.val_images} validation images made from scikit-image's "
        "bundled photos in SA-1B's format (tars of `sa_<id>.jpg` + `sa_<id>.json` with COCO-RLE masks): `sa1b/`.",
        "- Teacher: a random tiny SAM (segment-anything's classes), input 256 px, embeddings 256 x 16 x 16: "
        "`shards/train/teacher_tiny.pth`; its embeddings and per-patch avesim in `shards/`.",
        f"- Students: `tinyvit-micro`, {config.epochs} epochs, batch {config.batch_size}, AdamW lr 0.002, same seed; "
        f"`runs/mse` (plain MSE, MobileSAM) and `runs/srw` (patch-wise SRW, tau {config.tau}).",
        f"- Evaluation: grids {', '.join(f'{g}x{g}' for g in config.grids)}, masks against the teacher's from its "
        "stored embeddings, match `all`: `eval/` (summary.json, per_image.csv, table.md).",
        "", "## mIoU (Table 6 layout)", "", table, "## Figures", "",
    ]
    lines += [f"### {path.stem}\n\n![{path.stem}](figures/{path.name}) ([PDF](figures/{path.with_suffix('.pdf').name}))\n"
              for path in pngs]
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines += [f"| total | {sum(timings.values()):.1f} |", ""]
    report = out / "report.md"
    with atomic_path(report) as temporary:
        temporary.write_text("\n".join(lines))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.errors import SrwError

    if (args.out / "report.md").exists() or (args.out / "runs").exists():
        raise SrwError(f"{args.out} holds an earlier demo; remove it or pass another --out")
    run_demo(DemoConfig(out=args.out, progress=not args.no_progress))
    return 0
