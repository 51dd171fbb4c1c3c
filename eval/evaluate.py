"""``srw-sam eval``: students' masks against the teacher's, from stored teacher embeddings.

The teacher's masks come from its **stored** embedding through SAM's prompt encoder and
mask decoder (from the checkpoint, or the tiny teacher precompute saved); its image
encoder never runs. Each student's masks come from its own embedding of the stored image
through the same prompt encoder and decoder. Under torchrun, rank r takes images
``i % world_size == r``; rank 0 merges the results and writes the report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.distributed import distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.eval.grid_eval import evaluate_image
from mobilesam_srw.eval.metrics import MATCH_MODES
from mobilesam_srw.sam.predictor import EmbeddingPredictor, decoder_sam
from mobilesam_srw.eval.report import summarize, write_report
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.data import resolve_shards
from mobilesam_srw.sam.student import EMBEDDING_STRIDE
from mobilesam_srw.sam.teacher import TINY_TEACHER_FILE


@dataclass
class EvalConfig:
    """An evaluation.

    Args:
        shards: precompute shards of the evaluation images.
        students: run folders (or student files) to evaluate, in table order.
        out: report folder.
        sam_checkpoint: gives the prompt encoder and mask decoder; default: the tiny teacher
            saved beside the shards, when they were made by one.
        grids: points per side of each grid (the paper: 5, 16, 32).
        match: pairing of the three masks: ``all``, ``teacher-best``, ``own-best``.
        limit: evaluate the first N images only.
        points_per_batch: prompts per decoder call.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        progress: show a progress bar.
    """

    shards: list[str]
    students: list[Path]
    out: Path
    sam_checkpoint: Path | None = None
    grids: list[int] = field(default_factory=lambda: [32])
    match: str = "all"
    limit: int | None = None
    points_per_batch: int = 64
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        if not self.grids or min(self.grids) < 1:
            raise SrwError(f"--grid must be >= 1, got {self.grids}")
        if self.match not in MATCH_MODES:
            raise SrwError(f"--match must be one of {', '.join(MATCH_MODES)}, got {self.match}")
        if not self.students:
            raise SrwError("--student: give at least one run folder")


def resolve_sam_checkpoint(given: Path | None, shard_paths: list[str]) -> Path:
    """The checkpoint with the prompt encoder and decoder (default: the shards' tiny teacher)."""
    if given is not None:
        return Path(given)
    folder = Path(shard_paths[0]).parent
    manifest = shards.read_manifest(folder)
    if manifest and manifest["teacher"]["type"] == "tiny" and (folder / TINY_TEACHER_FILE).is_file():
        return folder / TINY_TEACHER_FILE
    teacher = manifest["teacher"]["type"] if manifest else "an unknown teacher"
    raise SrwError(f"--sam-checkpoint is required: the shards were made by {teacher}")


def run_labels(students: list[Path]) -> list[str]:
    names = [Path(s).name if Path(s).is_dir() else Path(s).stem for s in students]
    return names if len(set(names)) == len(names) else [str(s) for s in students]


def first_embedding_shape(paths: list[str]) -> tuple[int, ...]:
    for sample in shards.iterate_shards(paths[:1], with_image=False):
        return sample.embedding.shape
    raise SrwError(f"{paths[0]} holds no samples")


def evaluate(config: EvalConfig) -> dict:
    """Evaluate every student; returns the summary (on every rank)."""
    config.check()
    config.out = Path(config.out)
    paths = resolve_shards(config.shards)
    checkpoint_path = resolve_sam_checkpoint(config.sam_checkpoint, paths)
    embedding_shape = first_embedding_shape(paths)
    input_size = embedding_shape[-1] * EMBEDDING_STRIDE
    labels = run_labels(config.students)
    with distributed_context(config.device) as ctx:
        teacher = EmbeddingPredictor(decoder_sam(checkpoint_path, input_size).to(ctx.device))
        students = {}
        for label, path in zip(labels, config.students):
            student, _ = load_student(path)
            if student.embedding_shape != tuple(embedding_shape):
                raise SrwError(f"student {label} gives embeddings {list(student.embedding_shape)} but the "
                               f"teacher's are {list(embedding_shape)}")
            student.to(ctx.device)
            students[label] = (student, EmbeddingPredictor(decoder_sam(checkpoint_path, input_size, student).to(ctx.device)))
        results = []
        bar = tqdm(unit="img", desc=f"eval[{ctx.rank}]", disable=not (config.progress and ctx.is_main))
        for index, sample in enumerate(shards.iterate_shards(paths)):
            if config.limit is not None and index >= config.limit:
                break
            if index % ctx.world_size == ctx.rank:
                results += evaluate_image(sample, teacher, students, config.grids, config.match, config.points_per_batch)
                bar.update(ctx.world_size)
        bar.close()
        if ctx.is_distributed:
            gathered = [None] * ctx.world_size
            dist.all_gather_object(gathered, results)
            results = [result for part in gathered for result in part]
        if not results:
            raise SrwError("no images were evaluated")
        summary = {**summarize(results, labels, config.grids), "match": config.match, "grids": config.grids,
                   "runs": labels, "students": [str(s) for s in config.students], "sam_checkpoint": str(checkpoint_path)}
        if ctx.is_main:
            write_report(config.out, summary, results, labels, config.grids)
            print(f"eval: {summary['images']} images; report: {config.out}", file=sys.stderr)
        return summary
