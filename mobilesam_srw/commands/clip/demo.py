"""``srw-clip demo``: every stage of the CLIP path on scikit-image's photos with a RANDOM open_clip teacher.

Writes img2dataset-layout tars of photo crops with made-up captions (plus a corrupt JPEG and a sample
without a caption, which precompute skips), precomputes a random ViT-B-32 teacher's image embeddings,
trains a plain-MSE and an SRW student (same seed and steps), evaluates both and the teacher zero-shot
on a small ImageFolder made from other crops of the same photos, exports the SRW student as an open_clip
model and writes ``report.md``. It wires the stages together, so it lives with the CLI.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.commands.config_args import (
    Subcommand,
    add_config_arguments,
    config_from_args,
)
from mobilesam_srw.engine.config import EngineConfig
from mobilesam_srw.options import option
from mobilesam_srw.srw import MIN_TAU

HELP = "run every CLIP stage on bundled sample photos with a RANDOM open_clip teacher, and write a report"
RANDOM_TEACHER_NOTE = (
    "**The teacher is a RANDOMLY INITIALISED open_clip {teacher}: no CLIP weights can be had here.** Its image "
    "embeddings, its text tower's zero-shot classifier and every accuracy below mean nothing about CLIP or about "
    "SRW's gain; they show that each stage runs end to end (img2dataset tars, precompute, training on the engine, "
    "zero-shot evaluation with tail bands, export). For the paper's setting use CC3M, a real CLIP ViT-B checkpoint "
    "and the recipe in README.md."
)
FAULTS_NOTE = ("the last tar holds a corrupt JPEG and a sample without a caption on purpose: precompute skips "
               "each with a warning and records it in the manifest, and the run goes on")
# Four of the 80 OpenAI ImageNet templates: the text tower runs once per class and template on the CPU.
DEMO_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.", "itap of a {}.")


@dataclass(kw_only=True)
class ClipDemoConfig:
    """Sizes of the demo (the defaults finish in about two minutes on a 2-core CPU)."""

    out: Path = option(Path("clip_demo_out"), help="output folder")
    teacher: str = option("ViT-B-32", help="open_clip model of the random teacher")
    student: str = option("timm:test_vit", help="student: a 0.3M-parameter timm ViT, so the demo trains in seconds "
                                                "(tiny_vit_5m_224, the paper's, takes ~1 s per image on 2 cores)")
    train_images: int = option(32, help="captioned training images", minimum=4)
    images_per_class: int = option(2, help="evaluation images per class (8 classes)", minimum=1)
    epochs: int = option(3, help="training epochs of each student", minimum=1)
    batch_size: int = option(8, help="training batch (the SRW group)", minimum=2)
    tau: float = option(EngineConfig.tau, help="SRW temperature", minimum=MIN_TAU)
    seed: int = option(0, help="seeds data, teacher and students")
    progress: bool = option(True, help="no progress bars", flag="--no-progress")


class _Stages:
    """Times each stage and says which one runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function, *args, **kwargs):
        print(f"demo: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = function(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - started
        return result


def run_clip_demo(config: ClipDemoConfig) -> Path:
    """Run every stage into ``config.out``; returns the report's path."""
    import open_clip

    from mobilesam_srw.clip.train import ClipTrainConfig, train
    from mobilesam_srw.commands.clip.export import ClipExportConfig, export_run
    from mobilesam_srw.data_prep.clip.precompute import (
        ClipPrecomputeConfig,
        run_clip_precompute,
    )
    from mobilesam_srw.data_prep.clip.sample_data import (
        CLASSNAMES_FILE,
        write_sample_image_folder,
        write_sample_img2dataset,
    )
    from mobilesam_srw.eval.clip.evaluate import ClipEvalConfig, evaluate_clip
    from mobilesam_srw.viz.clip import ClipBandsConfig, draw_clip_bands

    out, stages = Path(config.out), _Stages()
    print("demo: " + RANDOM_TEACHER_NOTE.format(teacher=config.teacher).replace("**", ""), file=sys.stderr)
    tars = stages.run("sample data (img2dataset tars, ImageFolder)", _sample_data, out, config,
                      write_sample_img2dataset, write_sample_image_folder)
    print(f"demo: {FAULTS_NOTE}", file=sys.stderr)  # before precompute warns about them
    manifest = stages.run(f"precompute (random {config.teacher})", run_clip_precompute, ClipPrecomputeConfig(
        img2dataset=[str(tars)], out=out / "shards", teacher=config.teacher, random_teacher=True, seed=config.seed,
        shard_size=16, batch_size=8, workers=0, device="cpu", progress=config.progress))
    runs = [out / "runs" / loss for loss in ("mse", "srw")]
    for run in runs:
        stages.run(f"train {run.name}", train, ClipTrainConfig(
            shards=[str(out / "shards")], out=run, loss=run.name, tau=config.tau, student=config.student,
            epochs=config.epochs, batch_size=config.batch_size, workers=0, seed=config.seed, device="cpu",
            progress=config.progress, save_every=10_000))
    summary = stages.run("zero-shot evaluation", evaluate_clip, ClipEvalConfig(
        data=out / "imagefolder", students=runs, out=out / "eval", classnames=out / "imagefolder" / CLASSNAMES_FILE,
        templates=out / "templates.txt", cache_dir=out / "zeroshot_cache", band_size=8, workers=0, device="cpu",
        progress=config.progress))
    stages.run("Table 4 bands figure", draw_clip_bands, ClipBandsConfig(eval=out / "eval", out=out / "figures"))
    export = stages.run("export (open_clip local-dir)", export_run, ClipExportConfig(run=runs[-1], out=out / "export"))
    loaded = stages.run("load the export with plain open_clip", open_clip.create_model_and_transforms,
                        f"local-dir:{export.resolve()}")
    report = write_demo_report(out, config, manifest, summary, type(loaded[0]).__name__, stages.seconds)
    print(f"demo: done in {sum(stages.seconds.values()):.0f} s; report: {report}", file=sys.stderr)
    return report


def _sample_data(out: Path, config: ClipDemoConfig, write_tars, write_folder) -> Path:
    write_tars(out / "img2dataset", config.train_images, images_per_tar=16, seed=config.seed, faults=True)
    write_folder(out / "imagefolder", config.images_per_class, seed=config.seed + 1000)
    (out / "templates.txt").write_text("".join(f"{template}\n" for template in DEMO_TEMPLATES))
    return out / "img2dataset"


def write_demo_report(out: Path, config: ClipDemoConfig, manifest: dict, summary: dict, export_class: str,
                      seconds: dict[str, float]) -> Path:
    from mobilesam_srw.atomic import atomic_path

    skipped = "; ".join(f"`{s['key']}`: {s['reason']}" for s in manifest["skipped"]) or "none"
    lines = [
        "# srw-clip demo report", "", RANDOM_TEACHER_NOTE.format(teacher=config.teacher), "",
        "## What ran", "",
        f"- Data: {config.train_images} crops of scikit-image's photos with made-up captions, in img2dataset's "
        "WebDataset layout (`<key>.jpg`, `.txt`, `.json` in tars: `img2dataset/`), plus a corrupt JPEG and a "
        f"sample without a caption. Skipped by precompute: {skipped}.",
        f"- Precompute: teacher {summary['teacher']['description']} "
        f"(`shards/teacher_random.safetensors`); {manifest['samples_written']} samples in "
        f"{len(manifest['shards'])} shards: the {manifest['image_size'][0]} px pixels the teacher saw "
        f"({manifest['image_format']}) and its {manifest['embedding_dim']}-d image embedding "
        f"({manifest['embedding_dtype']}); `shards/manifest.json`.",
        f"- Students: `{config.student}` with a linear projection to {manifest['embedding_dim']} dims, "
        f"{config.epochs} epochs, batch {config.batch_size} (the SRW group), AdamW lr 0.001, same seed and steps: "
        f"`runs/mse` (plain MSE of image embeddings, the paper's baseline) and `runs/srw` (SRW, tau {config.tau}).",
        f"- Evaluation: {summary['images']} images in {summary['classes']} classes (`imagefolder/`, other crops of "
        f"the same photos), {summary['templates']} prompt templates (`templates.txt`; the real default is open_clip's "
        "80), the classifier from the teacher's text tower (cached in `zeroshot_cache/`); Table 4's bands over "
        f"batches of {summary['bands']['batch_size']} (64 by default); `eval/`.",
        f"- Export: `export/` is an open_clip `local-dir:` model (the SRW student's image tower, the teacher's text "
        f"tower); `open_clip.create_model_and_transforms('local-dir:export')` loaded it as `{export_class}`.",
        "", "## Zero-shot accuracy (Table 5 layout) and tail bands (Table 4 layout)", "",
        (out / "eval" / "table.md").read_text(),
        "![Table 4 bands](figures/bands.png) ([PDF](figures/bands.pdf))", "",
        "*Left: each student's zero-shot top-1 per band of teacher avesim rank (one seed: no spread). Right: SRW "
        "minus MSE.*", "", "## Time per stage (2-core CPU)", "",
        "| stage | seconds |", "|---|---|",
        *[f"| {name} | {value:.1f} |" for name, value in seconds.items()],
        f"| total | {sum(seconds.values()):.1f} |", "",
    ]
    report = out / "report.md"
    with atomic_path(report) as temporary:
        temporary.write_text("\n".join(lines))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ClipDemoConfig)


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.options import check_options

    config = config_from_args(ClipDemoConfig, args)
    check_options(config)
    if config.out.exists() and not config.out.is_dir():
        raise SrwError(f"--out {config.out} exists and is not a folder")
    if (config.out / "report.md").exists() or (config.out / "runs").exists():
        raise SrwError(f"{config.out} holds an earlier demo; remove it or pass another --out")
    run_clip_demo(config)
    return 0


COMMAND = Subcommand(HELP, add_arguments, run)
