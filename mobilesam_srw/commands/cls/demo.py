"""``srw-cls demo``: KD, KD+SRW, DKD and DKD+SRW over seeds on scikit-learn's handwritten digits.

Real data (1,797 8x8 digits, a fixed stratified split), a small CNN teacher trained here, and
students a quarter of its width; every student is evaluated for top-1 and Table 4's tail bands.
A report gives mean ± std over seeds. It runs on a CPU in about two minutes.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.cls.config import ClsTrainConfig
from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import check_options, option
from mobilesam_srw.srw import MIN_TAU
from mobilesam_srw.threads import single_threaded

TEACHER, STUDENT = "cnn_digits_teacher", "cnn_digits_student"
SETTINGS_FILE = "demo.json"
CONFIGURATIONS = (("kd", False), ("kd", True), ("dkd", False), ("dkd", True))


@dataclass(kw_only=True)
class ClsDemoConfig:
    out: Path = option(Path("cls_demo_out"), help="output folder (runs/, report.md)")
    seeds: int = option(5, minimum=1, help="students per configuration (seeds 0..N-1)")
    epochs: int = option(20, minimum=1, help="epochs of the teacher and of each student")
    tau: float = option(ClsTrainConfig.tau, minimum=MIN_TAU, help="SRW temperature (Eq. 5)")
    progress: bool = option(True, help="no progress bars", flag="--no-progress")


def _label(method: str, srw: bool) -> str:
    return f"{method.upper()}{' + SRW' if srw else ''}"


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


@single_threaded
def run_demo(config: ClsDemoConfig) -> Path:
    """Train the teacher and every student into ``config.out``; returns the report's path."""
    from mobilesam_srw.cls.config import ClsTrainConfig
    from mobilesam_srw.cls.train import train
    from mobilesam_srw.eval.cls.evaluate import ClsEvalConfig, evaluate_classifiers
    from mobilesam_srw.viz.cls import ClsBandsConfig, draw_cls_bands

    check_options(config)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SrwError(f"--out {out} exists and is not a folder")
    _claim(out, config)
    runs = out / "runs"
    common = dict(dataset="digits", epochs=config.epochs, workers=0, device="cpu", progress=False)
    started = time.perf_counter()
    teacher = runs / "teacher"
    if not (teacher / "student.pt").is_file():
        train(ClsTrainConfig(out=teacher, student=TEACHER, seed=0, **common))
    folders: dict[tuple[str, bool], list[Path]] = {}
    for method, srw in CONFIGURATIONS:
        for seed in range(config.seeds):
            folder = runs / f"{method}{'_srw' if srw else ''}_seed{seed}"
            if not (folder / "student.pt").is_file():
                train(ClsTrainConfig(out=folder, student=STUDENT, teacher=TEACHER, teacher_checkpoint=teacher / "student.pt",
                                     method=method, srw=srw, tau=config.tau, seed=seed, resume=folder.exists(),
                                     **common))
            folders.setdefault((method, srw), []).append(folder)
    everything = [folder for group in folders.values() for folder in group]
    summary = evaluate_classifiers(ClsEvalConfig(dataset="digits", runs=everything, out=out / "eval", device="cpu",
                                                 progress=config.progress))
    draw_cls_bands(ClsBandsConfig(eval=out / "eval", out=out / "figures"))
    report = _write_report(out, config, folders, summary, time.perf_counter() - started)
    return report


def _claim(out: Path, config: ClsDemoConfig) -> None:
    """Record the runs' settings in ``out`` (finished runs are reused only by a rerun of the same epochs and
    tau; more seeds add runs); a folder holding a demo of other settings is refused with one line."""
    settings = {"epochs": config.epochs, "tau": config.tau}
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != settings:
            raise SrwError(f"{out} holds a srw-cls demo of other settings ({previous}); choose another --out")
    elif (out / "runs").exists():
        raise SrwError(f"{out} holds runs of unknown settings; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def _write_report(out: Path, config: ClsDemoConfig, folders: dict, summary: dict, seconds: float) -> Path:
    results = summary["results"]
    bands = list(next(iter(results.values()))["bands"])
    lines = [
        "# srw-cls demo: KD and DKD, with and without SRW, on scikit-learn's digits", "",
        "- Data: scikit-learn's 1,797 handwritten 8x8 digits, a fixed stratified split (1,349 train, 448 test).",
        f"- Teacher: `{TEACHER}` (3 conv stages, width 32), cross-entropy, {config.epochs} epochs; "
        f"test top-1 {results['teacher']['top1']:.2f}%.",
        f"- Students: `{STUDENT}` (width 8), {config.epochs} epochs, SGD lr 0.05, batch 64, {config.seeds} "
        f"seed{'s' if config.seeds > 1 else ''} each; KD (CE 0.1 + KD 0.9, T 4), DKD (alpha 1, beta 8, T 4, warmup 5 epochs); SRW: tau {config.tau}, "
        "softmax (Eq. 5) over the batch's teacher penultimate features.",
        f"- Bands (Table 4): each fixed batch of 64 test images ranked by the teacher's average similarity; "
        f"ranks 49-64 are the tail. Top-1 and bands are of each run's final weights (the last epoch's; "
        f"`srw-cls table` reports mdistiller's best over epochs). Time: {seconds:.0f} s.", "",
        "| students | top-1 | " + " | ".join(f"ranks {b}" for b in bands) + " |",
        "|---|---|" + "---|" * len(bands),
    ]
    for (method, srw), group in folders.items():
        rows = [results[folder.name] for folder in group]
        lines.append(f"| {_label(method, srw)} | {_spread([r['top1'] for r in rows])} | "
                     + " | ".join(_spread([r["bands"][b] for r in rows if r["bands"][b] is not None]) for b in bands)
                     + " |")
    spread = (f"Mean ± std over {config.seeds} seeds (%). The differences are within a few points of the seed "
              "spread at this size" if config.seeds > 1 else "One seed (%), so no spread: the differences say nothing")
    lines += ["", f"{spread}: the demo shows the pipeline, not a claim about SRW.", "",
              "![Table 4 bands](figures/bands.png) ([PDF](figures/bands.pdf))", "",
              "*Left: each configuration's test top-1 per band of teacher avesim rank (mean ± std over seeds). "
              "Right: each +SRW configuration minus its baseline, paired by seed.*", ""]
    path = out / "report.md"
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(lines))
    print(f"cls demo: {seconds:.0f} s", file=sys.stderr)
    return path
