"""``srw-clip eval``: zero-shot classification of students and their teacher (the paper's Table 5),
with Table 4's tail bands.

Each image of an ImageFolder goes through the teacher's open_clip preprocessing (torchvision's
ImageFolder reads it as RGB, as open_clip's own ImageNet evaluation does); the teacher's and every
student's image embeddings are classified by the same zero-shot classifier, built from the teacher's
text tower (class names x prompt templates, cached on disk). Top-1/top-5 per model; per student, top-1
in Table 4's bands: the images are grouped 64 at a time in a seeded order, ranked within their group by
the teacher's average similarity (Eq. 4, descending), and ranks 1-16 (head) ... 49-64 (tail) are pooled.
One process; a GPU when there is one.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mobilesam_srw.atomic import atomic_path, write_json
from mobilesam_srw.clip.checkpoint import load_clip_student
from mobilesam_srw.clip.teacher import (
    ClipTeacher,
    PixelTransform,
    normalize_pixels,
    pixels_channels_first,
)
from mobilesam_srw.clip.teacher_record import differing_fields, rebuild_teacher
from mobilesam_srw.clip.zeroshot import (
    cached_zero_shot_classifier,
    imagenet_classnames,
    openai_imagenet_templates,
    read_classnames,
    read_templates,
    zero_shot_logits,
)
from mobilesam_srw.distributed import resolve_device
from mobilesam_srw.engine.config import default_workers
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import loader_worker_init, output_lock
from mobilesam_srw.metrics import (
    TABLE4_BANDS,
    TABLE4_BATCH_SIZE,
    band_names,
    classification_metrics,
)
from mobilesam_srw.options import check_options, option

IMAGENET_SYNSETS = 1000
IMAGENET_FIRST_LAST = ("n01440764", "n15075141")  # tench ... toilet tissue: ImageNet-1K's sorted synsets
_SYNSET = re.compile(r"n\d{8}")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mobilesam-srw/zeroshot`` (``~/.cache/...`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilesam-srw" / "zeroshot"


@dataclass(kw_only=True)
class ClipEvalConfig:
    """``srw-clip eval``: which images, which students, where the report goes."""

    data: Path = option(help="ImageFolder: one folder per class (ImageNet-1K val: its 1000 synset folders)")
    students: list[Path] = option(help="run folders (or student.pt files), in table order, e.g. runs/mse runs/srw",
                                  flag="--student")
    out: Path = option(help="report folder (summary.json, table.md, predictions.csv)")
    teacher_checkpoint: Path | None = option(None, help="the teacher's checkpoint (default: the path its precompute "
                                                        "recorded)")
    classnames: Path | None = option(None, help="class names, one a line, in sorted folder order (default: "
                                                "open_clip's ImageNet-1K names, for the 1000 synset folders)")
    templates: Path | None = option(None, help="prompt templates, one a line with {} for the class name (default: "
                                               "open_clip's 80 OpenAI ImageNet templates)")
    cache_dir: Path = option(factory=default_cache_dir, help="zero-shot classifier cache (default "
                                                             "~/.cache/mobilesam-srw/zeroshot)")
    batch_size: int = option(64, help="images per forward pass", minimum=1)
    band_size: int = option(TABLE4_BATCH_SIZE, help="Table 4's ranking batch (the paper: 64)", minimum=TABLE4_BANDS)
    band_seed: int = option(0, help="seeds the order in which images are grouped for the tail bands")
    limit: int | None = option(None, help="evaluate N images, a seeded choice over all classes", minimum=1)
    workers: int = option(factory=default_workers, help="image decoding processes (default min(4, cores))",
                          minimum=0)
    device: str = option("auto", help="auto (a GPU if any), cpu, cuda, cuda:N")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")

    def check(self) -> None:
        check_options(self)
        if not Path(self.data).is_dir():
            raise SrwError(f"--data {self.data} is not a folder")
        for flag, folder in (("--out", self.out), ("--cache-dir", self.cache_dir)):
            if Path(folder).exists() and not Path(folder).is_dir():
                raise SrwError(f"{flag} {folder} exists and is not a folder")


class _TeacherPixels(Dataset):
    """ImageFolder samples -> the teacher's uint8 pixels; a file that cannot be read is reported, not raised,
    so the main process names it in one line."""

    def __init__(self, samples: list[tuple[str, int]], pixels: PixelTransform) -> None:
        self.samples, self.pixels = samples, pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        from torchvision.datasets.folder import pil_loader

        path, label = self.samples[index]
        try:
            return {"pixels": self.pixels(pil_loader(path)), "label": label, "index": index}
        except Exception as error:  # Pillow raises many types on a malformed file
            return {"error": f"cannot read image {path}: {type(error).__name__}: {error}"}


def image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The class folders (sorted) and ``(path, label)`` samples of an ImageFolder, as torchvision finds them."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root), loader=lambda path: path)
    except (FileNotFoundError, OSError) as error:
        raise SrwError(f"--data {root}: {' '.join(str(error).split())}") from None
    return folder.classes, folder.samples


def resolve_classnames(classes: list[str], classnames_file: Path | None) -> tuple[list[str], str]:
    """The class names of the folders and where they came from (a file, or open_clip's ImageNet-1K names)."""
    if classnames_file is not None:
        names = read_classnames(classnames_file)
        if len(names) != len(classes):
            raise SrwError(f"--classnames {classnames_file} lists {len(names)} names for {len(classes)} class folders")
        return names, str(classnames_file)
    if (len(classes) == IMAGENET_SYNSETS and all(_SYNSET.fullmatch(name) for name in classes)
            and (classes[0], classes[-1]) == IMAGENET_FIRST_LAST):
        return imagenet_classnames(), "ImageNet-1K (open_clip's class names)"
    raise SrwError(f"--data has {len(classes)} class folders, not ImageNet-1K's 1000 synsets; pass --classnames FILE "
                   "(one name per line, in sorted folder order)")


def _run_names(paths: list[Path]) -> list[str]:
    names = [Path(path).name if Path(path).is_dir() else Path(path).stem for path in paths]
    return names if len(set(names)) == len(names) else [str(path) for path in paths]


def _checked(name: str, embedding: torch.Tensor, batch: list[dict], samples: list[tuple[str, int]]) -> torch.Tensor:
    """``embedding`` if every value is finite; else one line naming the model and an image (a NaN or inf
    embedding would be classified as some class, and the accuracy be quietly wrong)."""
    finite = torch.isfinite(embedding).all(dim=1)
    if not finite.all():
        first = samples[batch[int((~finite).nonzero()[0])]["index"]][0]
        raise SrwError(f"{name} gives NaN or inf embeddings for {int((~finite).sum())} of {len(batch)} images of a "
                       f"batch (first: {first}); are its weights sound?")
    return embedding


def _embed(models: dict[str, torch.nn.Module], teacher: ClipTeacher, loader: DataLoader, device: torch.device,
           progress: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Image embeddings of every model (``teacher`` first, each checked finite), the labels and dataset indices."""
    features: dict[str, list[torch.Tensor]] = {name: [] for name in ["teacher", *models]}
    labels, indices = [], []
    height, width = teacher.identity.image_size
    samples = loader.dataset.samples
    with torch.no_grad():
        for batch in tqdm(loader, unit="batch", desc="eval", disable=not progress):
            if failed := [item["error"] for item in batch if "error" in item]:
                raise SrwError(failed[0])
            pixels = pixels_channels_first(np.stack([item["pixels"] for item in batch]), (height, width)).to(device)
            features["teacher"].append(_checked("the teacher", teacher.encode(pixels).float().cpu(), batch, samples))
            image = normalize_pixels(pixels, teacher.mean, teacher.std)
            for name, model in models.items():
                features[name].append(_checked(f"student {name}", model(image).float().cpu(), batch, samples))
            labels.append(torch.tensor([item["label"] for item in batch]))
            indices.append(torch.tensor([item["index"] for item in batch]))
    return {name: torch.cat(parts) for name, parts in features.items()}, torch.cat(labels), torch.cat(indices)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _difference(last: float | None, first: float | None) -> float | None:
    return None if last is None or first is None else last - first


def summarize(features: dict[str, torch.Tensor], labels: torch.Tensor, classifier: torch.Tensor,
              order: torch.Tensor, band_size: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Top-1/top-5 (percent) of every model; for every student also its top-1 agreement with the teacher
    (percent), the mean cosine of its embeddings to the teacher's, and top-1 in Table 4's bands
    (``mobilesam_srw.metrics``: the teacher's features ranked within batches of ``band_size`` taken in ``order``);
    and each model's top-1 predictions."""
    results, predictions = {}, {}
    for name, embedding in features.items():
        logits = zero_shot_logits(embedding, classifier)
        predictions[name] = logits.argmax(dim=1)
        metrics = classification_metrics(logits[order], labels[order], features["teacher"][order], band_size,
                                         TABLE4_BANDS).as_dict()
        entry = {"top1": metrics["top1"], "top5": metrics["top5"]}
        if name != "teacher":  # fidelity to the teacher: same top-1 class, and the embeddings' cosine
            entry["agreement"] = 100.0 * (predictions[name] == predictions["teacher"]).float().mean().item()
            entry["cosine"] = torch.nn.functional.cosine_similarity(embedding, features["teacher"]).mean().item()
            entry["bands"] = {label: None if math.isnan(value) else value for label, value in metrics["bands"].items()}
            entry["band_counts"] = metrics["band_counts"]
        results[name] = entry
    return results, predictions


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def markdown_table(summary: dict) -> str:
    """Table 5's layout (top-1/top-5, a Δ row of the last run minus the first) and Table 4's bands."""
    runs = summary["runs"]
    lines = [f"Zero-shot classification on `{summary['data']}`: {summary['images']} images, {summary['classes']} "
             f"classes ({summary['classnames']}), {summary['templates']} prompt templates. "
             f"Teacher: {summary['teacher']['description']}.", "",
             "| model | Top-1 | Top-5 | top-1 = teacher's | cosine to teacher |", "|---|---|---|---|---|",
             f"| teacher {summary['teacher']['name']} | {_cell(summary['teacher']['top1'])} | "
             f"{_cell(summary['teacher']['top5'])} | | |"]
    for run in runs:
        label = run["name"] if run["name"] == run["loss"] else f"{run['name']} ({run['loss']})"
        lines.append(f"| {label} | {_cell(run['top1'])} | {_cell(run['top5'])} | {_cell(run['agreement'])} | "
                     f"{run['cosine']:.4f} |")
    if len(runs) > 1:
        first, last, delta = runs[0], runs[-1], summary["delta"]
        lines.append(f"| Δ ({last['name']} - {first['name']}) | {_cell(delta['top1'], True)} | "
                     f"{_cell(delta['top5'], True)} | {_cell(delta['agreement'], True)} | {delta['cosine']:+.4f} |")
    bands = summary["bands"]
    lines += ["", f"Top-1 by rank of the teacher's average similarity within batches of {bands['batch_size']} images "
              f"(Table 4: ranks {bands['labels'][0]} are the head, {bands['labels'][-1]} the tail; images taken in a "
              f"seeded order, seed {bands['seed']}):",
              "", "| model | " + " | ".join(bands["labels"]) + " |", "|---|" + "---|" * len(bands["labels"])]
    for run in runs:
        lines.append(f"| {run['name']} | " + " | ".join(_cell(run["bands"][label]) for label in bands["labels"]) + " |")
    if len(runs) > 1:
        lines.append(f"| Δ ({runs[-1]['name']} - {runs[0]['name']}) | "
                     + " | ".join(_cell(summary["delta"]["bands"][label], True) for label in bands["labels"]) + " |")
    return "\n".join(lines) + "\n"


def _write_predictions(path: Path, samples: list[tuple[str, int]], indices: torch.Tensor, labels: torch.Tensor,
                       predictions: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "label", *(f"pred_{name}" for name in predictions)])
        for row, index in enumerate(indices.tolist()):
            writer.writerow([samples[index][0], int(labels[row]),
                             *(int(prediction[row]) for prediction in predictions.values())])


def _choose(samples: list[tuple[str, int]], limit: int | None, seed: int) -> list[tuple[str, int]]:
    if limit is None or limit >= len(samples):
        return samples
    chosen = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return [samples[index] for index in chosen.tolist()]


def evaluate_clip(config: ClipEvalConfig) -> dict:
    """Evaluate every student and the teacher; writes ``summary.json``, ``table.md`` and ``predictions.csv``."""
    config.check()
    device = resolve_device(config.device)
    classes, samples = image_folder(config.data)  # the inputs first: they fail fast, the teacher takes seconds
    classnames, classnames_source = resolve_classnames(classes, config.classnames)
    templates = read_templates(config.templates) if config.templates else openai_imagenet_templates()
    samples = _choose(samples, config.limit, config.band_seed)
    loaded = [load_clip_student(path) for path in config.students]
    identity = loaded[0][1]["teacher"]
    for path, (_, record) in zip(config.students, loaded):
        if differing := differing_fields(record["teacher"], identity):
            raise SrwError(f"{path} was distilled from another teacher than {config.students[0]} "
                           f"({', '.join(differing)} differ); evaluate them separately")
    teacher = rebuild_teacher(identity, config.teacher_checkpoint, loaded[0][1].get("teacher_checkpoint"), device)
    if teacher.identity.is_random:
        print(f"eval: the teacher is {teacher.identity.describe()}: accuracies mean nothing", file=sys.stderr)
    progress = (lambda items: tqdm(items, unit="batch", desc="classifier")) if config.progress else None
    classifier = cached_zero_shot_classifier(teacher, classnames, templates, config.cache_dir, progress)

    names = _run_names(config.students)
    models = {name: model.to(device) for name, (model, _) in zip(names, loaded)}
    loader = DataLoader(_TeacherPixels(samples, teacher.pixels), batch_size=config.batch_size,
                        num_workers=config.workers, collate_fn=list,
                        worker_init_fn=loader_worker_init)
    with output_lock(config.out):  # one writer per report folder, from the first image to the last file
        features, labels, indices = _embed(models, teacher, loader, device, config.progress)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.band_seed))
        results, predictions = summarize(features, labels, classifier, order, config.band_size)
        labels_of_bands = band_names(config.band_size, TABLE4_BANDS)

        runs = [{"name": name, "path": str(path), "student": record["student"], "loss": record.get("loss"),
                 "seed": record.get("seed"), "tau": record.get("tau"), "normalizer": record.get("normalizer"), "steps": record.get("steps"),
                 **results[name]} for name, path, (_, record) in zip(names, config.students, loaded)]
        summary = {
            "data": str(config.data), "images": len(labels), "classes": len(classes), "classnames": classnames_source,
            "templates": len(templates),
            "teacher": {**identity, "description": teacher.identity.describe(), **results["teacher"]},
            "runs": runs,
            "delta": {**{key: runs[-1][key] - runs[0][key] for key in ("top1", "top5", "agreement", "cosine")},
                      "bands": {label: _difference(runs[-1]["bands"][label], runs[0]["bands"][label])
                                for label in labels_of_bands}},
            "bands": {"batch_size": config.band_size, "labels": labels_of_bands, "seed": config.band_seed},
        }
        out = Path(config.out)
        write_json(out / "summary.json", summary)
        table = markdown_table(summary)
        with atomic_path(out / "table.md") as temporary:
            temporary.write_text(table)
        _write_predictions(out / "predictions.csv", samples, indices, labels, predictions)
        print(table, file=sys.stderr)
        return summary
