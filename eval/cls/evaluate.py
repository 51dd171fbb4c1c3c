"""``srw-cls eval``: top-1/top-5 and Table 4's tail bands of trained classifiers, with each +SRW run's Δ from
its own baseline (same method and seed).

The bands need the teacher's features: each fixed batch of 64 evaluation samples is ranked by the
teacher's average similarity (Eq. 4), ranks 49-64 being the tail, over the teacher output the +SRW runs
compared (their ``--srw-feature``: pooled penultimate features by default, or logits; ``--rank-by``
chooses). Each run is scored with its final weights (the last epoch's).
The teacher is the runs' own (from their records) unless ``--teacher``/``--teacher-checkpoint`` say
otherwise; it is scored as a row too.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.cls import models
from mobilesam_srw.cls.checkpoint import load_classifier
from mobilesam_srw.cls.config import SRW_FEATURES
from mobilesam_srw.cls.data import DATASET_FAMILY, build_datasets
from mobilesam_srw.cls.task import srw_feature
from mobilesam_srw.distributed import resolve_device
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import loader_worker_init, output_lock
from mobilesam_srw.metrics import ClassificationMeter, ClassificationMetrics
from mobilesam_srw.options import check_options, option

TEACHER_ROW = "teacher"
ARM_FIELDS = ("method", "srw", "tau", "seed")  # what groups runs into a baseline and its +SRW, by seed


@dataclass(kw_only=True)
class ClsEvalConfig:
    """An evaluation of ``srw-cls`` runs on a data set's held-out split."""

    dataset: str | None = option(None, choices=tuple(n for n, f in DATASET_FAMILY.items() if f),
                                 help="data set (default: the one the runs were trained on)")
    data: Path | None = option(None, help="the data folder, as for srw-cls train")
    runs: list[Path] = option(help="run folders, in table order (Δ: each +SRW run minus its baseline of the same "
                                   "method and seed; two runs without such a pair: the last minus the first)",
                              flag="--run")
    teacher: str | None = option(None, help="teacher model for the bands (default: the runs' teacher)")
    teacher_checkpoint: Path | None = option(None, help="its weights (default: the runs' teacher checkpoint)")
    rank_by: str | None = option(None, choices=SRW_FEATURES, help="teacher output whose average similarity ranks the "
                                 "bands (default: the one the +SRW runs compared, their --srw-feature; penultimate "
                                 "when no run used SRW)")
    out: Path | None = option(None, help="report folder (summary.json, table.md); default: print only")
    batch_size: int = option(256, minimum=1, help="samples per forward pass (the bands always rank batches of 64)")
    workers: int = option(0, minimum=0, help="data loading processes")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")


def _teacher(config: ClsEvalConfig, records: list[dict], num_classes: int) -> torch.nn.Module:
    name = config.teacher or records[0].get("teacher")
    weights = config.teacher_checkpoint or records[0].get("teacher_checkpoint")
    if not name or not weights:
        raise SrwError("the bands need a teacher: give --teacher and --teacher-checkpoint (the runs name none)")
    teacher = models.create(name, num_classes, DATASET_FAMILY[config.dataset])
    return models.load_teacher_checkpoint(teacher, Path(weights)).eval()


def rank_feature(config: ClsEvalConfig, records: list[dict]) -> str:
    """The teacher output that ranks the bands: ``--rank-by``, else the ``srw_feature`` of the runs that used
    SRW (runs without SRW compared nothing), else ``penultimate``; +SRW runs of different features are refused."""
    if config.rank_by is not None:
        return config.rank_by
    used = sorted({str(record.get("srw_feature", SRW_FEATURES[0])) for record in records if record.get("srw")})
    if len(used) > 1:
        raise SrwError(f"the +SRW runs compared different teacher outputs ({', '.join(used)}); give --rank-by")
    return used[0] if used else SRW_FEATURES[0]


def _json_safe(value):
    """NaN (an empty band) as null, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def paired_runs(arms: dict[str, dict]) -> list[tuple[str, str]]:
    """(+SRW run, its baseline) label pairs: each run with SRW and the run without SRW of the same method and seed."""
    baselines = {(arm.get("method"), arm.get("seed")): label for label, arm in arms.items()
                 if label != TEACHER_ROW and arm.get("srw") is False and arm.get("method") is not None}
    return [(label, baselines[(arm.get("method"), arm.get("seed"))]) for label, arm in arms.items()
            if label != TEACHER_ROW and arm.get("srw") is True and (arm.get("method"), arm.get("seed")) in baselines]


def _differences(results: dict[str, ClassificationMetrics], run: str, baseline: str) -> list[float]:
    """top-1, top-5 and each band of ``run`` minus ``baseline``."""
    a, b = results[baseline], results[run]
    return [b.top1 - a.top1, b.top5 - a.top5, *(y - x for x, y in zip(a.band_accuracy, b.band_accuracy))]


def delta_rows(results: dict[str, ClassificationMetrics], arms: dict[str, dict] | None = None
               ) -> list[tuple[str, list[float]]]:
    """The table's Δ rows: each +SRW run minus its own baseline (same method and seed; :func:`paired_runs`),
    as the mean over seeds where a method (and tau) has several pairs; without any pair, two runs give the
    last minus the first."""
    pairs = paired_runs({label: arm for label, arm in (arms or {}).items() if label in results})
    if not pairs:
        runs = [label for label in results if label != TEACHER_ROW]
        return [(f"Δ ({runs[-1]} - {runs[0]})", _differences(results, runs[-1], runs[0]))] if len(runs) == 2 else []
    groups: dict[tuple, list[tuple[str, str]]] = {}
    for run, baseline in pairs:
        groups.setdefault((arms[run]["method"], arms[run].get("tau")), []).append((run, baseline))
    rows = []
    for (method, tau), members in groups.items():
        if len(members) == 1:
            (run, baseline), = members
            rows.append((f"Δ ({run} - {baseline})", _differences(results, run, baseline)))
            continue
        differences = [_differences(results, run, baseline) for run, baseline in members]
        mean = [math.fsum(column) / len(column) for column in zip(*differences)]
        name = str(method).upper()
        rows.append((f"Δ {name} +SRW{'' if tau is None else f' (tau {tau:g})'} - {name}, "
                     f"mean of {len(members)} seeds paired by seed", mean))
    return rows


def report_table(results: dict[str, ClassificationMetrics], arms: dict[str, dict] | None = None,
                 ranked_by: str = SRW_FEATURES[0]) -> str:
    """Markdown: one row per model, Table 4's bands, and the Δ rows of :func:`delta_rows`.

    Args:
        results: label -> metrics, the teacher first.
        arms: label -> the run's ``method``, ``srw``, ``tau``, ``seed`` (:data:`ARM_FIELDS`).
        ranked_by: the teacher output that ranked the bands (``penultimate`` or ``logits``).
    """
    first = next(iter(results.values()))
    header = ("| model | top-1 | top-5 | " + " | ".join(f"ranks {n}" + (" (tail)" if i == len(first.band_names) - 1
                                                              else "") for i, n in enumerate(first.band_names))
              + " |\n|---|---|---|" + "---|" * len(first.band_names) + "\n")
    rows = [f"| {label} | {_cell(m.top1)} | {_cell(m.top5)} | " + " | ".join(map(_cell, m.band_accuracy)) + " |"
            for label, m in results.items()]
    rows += [f"| {label} | " + " | ".join("n/a" if math.isnan(v) else f"{v:+.2f}" for v in values) + " |"
             for label, values in delta_rows(results, arms)]
    feature = "pooled penultimate features" if ranked_by == "penultimate" else "logits"
    return ("Accuracy (%) on the held-out split of each run's final weights (the last epoch's); bands: each fixed "
            f"batch of 64 ranked by the teacher's average similarity (Eq. 4 over its {feature}), highest first "
            "(Table 4). Δ: each +SRW run minus its baseline of the same method and seed.\n\n" + header
            + "\n".join(rows) + "\n")


@torch.no_grad()
def evaluate_classifiers(config: ClsEvalConfig) -> dict:
    """Evaluate every run (and the teacher); writes the report when ``out`` is set; returns the summary."""
    check_options(config)
    if not config.runs:
        raise SrwError("--run: give at least one run folder")
    if config.out is not None and Path(config.out).exists() and not Path(config.out).is_dir():
        raise SrwError(f"--out {config.out} exists and is not a folder")
    device = resolve_device(config.device)
    loaded = [load_classifier(run) for run in config.runs]
    if config.dataset is None:
        trained_on = sorted({str(record["dataset"]) for _, record in loaded})
        if len(trained_on) > 1:
            raise SrwError(f"the runs were trained on different data sets ({', '.join(trained_on)}); give --dataset")
        config.dataset = trained_on[0]
    _, val_set, num_classes = build_datasets(config.dataset, config.data, train_transform=False)
    for run, (_, record) in zip(config.runs, loaded):
        if record["num_classes"] != num_classes or record["dataset"] != config.dataset:
            raise SrwError(f"{run} was trained on {record['dataset']} ({record['num_classes']} classes), "
                           f"not {config.dataset}")
    teacher = _teacher(config, [record for _, record in loaded], num_classes).to(device)
    ranked_by = rank_feature(config, [record for _, record in loaded])
    labels = [Path(run).name for run in config.runs]
    if len(set(labels)) != len(labels):
        labels = [str(run) for run in config.runs]
    modelled = {TEACHER_ROW: teacher, **{label: model.to(device) for label, (model, _) in zip(labels, loaded)}}
    loader = DataLoader(val_set, batch_size=config.batch_size, shuffle=False, num_workers=config.workers,
                        worker_init_fn=loader_worker_init)
    with output_lock(config.out) if config.out is not None else contextlib.nullcontext():  # one writer per folder
        results = _score(modelled, teacher, loader, device, config.progress, ranked_by)
        arms = {label: {name: record.get(name) for name in ARM_FIELDS} for label, (_, record) in zip(labels, loaded)}
        summary = {"dataset": config.dataset, "runs": [str(r) for r in config.runs], "ranked_by": ranked_by,
                   "arms": arms, "pairs": [{"run": run, "baseline": baseline} for run, baseline in paired_runs(arms)],
                   "results": {label: _json_safe(m.as_dict()) for label, m in results.items()}}
        table = report_table(results, arms, ranked_by)
        if config.out is not None:
            write_json(Path(config.out) / "summary.json", summary)
            with atomic_path(Path(config.out) / "table.md") as temporary:
                temporary.write_text(table)
    summary["table"] = table
    return summary


def _finite(label: str, values: torch.Tensor) -> torch.Tensor:
    """``values`` if all are finite; else one line naming the model (NaN logits would count as some class,
    NaN features would rank the bands at random, and the table be quietly wrong)."""
    if not torch.isfinite(values).all():
        raise SrwError(f"{label} gives NaN or inf outputs on the evaluation data; are its weights sound?")
    return values


def _score(modelled: dict[str, torch.nn.Module], teacher: torch.nn.Module, loader: DataLoader,
           device: torch.device, progress: bool, ranked_by: str = SRW_FEATURES[0]) -> dict[str, ClassificationMetrics]:
    """Top-1/top-5 and bands of every model (the teacher's ``ranked_by`` output ranks the bands)."""
    meters = {label: ClassificationMeter() for label in modelled}
    for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        images, targets = batch["image"].to(device), batch["label"]
        teacher_logits, teacher_features = teacher(images)
        ranking = _finite(TEACHER_ROW, srw_feature(teacher_logits, teacher_features, ranked_by).float().cpu())
        for label, model in modelled.items():
            logits = teacher_logits if model is teacher else model(images)[0]
            meters[label].update(_finite(label, logits.float().cpu()), targets, ranking)
    return {label: meter.compute() for label, meter in meters.items()}
