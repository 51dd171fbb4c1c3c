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

import torch.distributed as dist
from tqdm import tqdm

from mobilesam_srw import shards
from mobilesam_srw.distributed import distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.eval.everything_eval import evaluate_image_everything, summarize_everything
from mobilesam_srw.eval.grid_eval import evaluate_image
from mobilesam_srw.eval.gt_eval import PROMPTS, evaluate_image_gt, summarize_gt
from mobilesam_srw.eval.metrics import MATCH_MODES
from mobilesam_srw.eval.report import grid_rows, markdown_table, summarize, write_report
from mobilesam_srw.sam.predictor import EmbeddingPredictor, decoder_sam
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.data import index_shards, resolve_shards
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
        mode: ``grid`` (Table 6), ``everything`` (automatic masks, matched; recall by size) or
            ``gt`` (SA-1B annotation prompts against ground-truth masks).
        grids: points per side of each grid (the paper: 5, 16, 32); ``everything`` takes one.
        match: pairing of the three masks in grid mode: ``all``, ``teacher-best``, ``own-best``.
        prompt: ``center`` or ``box``, for ``gt`` mode.
        pred_iou_thresh, stability_thresh: the automatic mask generator's filters (``everything``).
        limit: evaluate the first N images only.
        points_per_batch: prompts per decoder call.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        progress: show a progress bar.
    """

    shards: list[str]
    students: list[Path]
    out: Path
    sam_checkpoint: Path | None = None
    mode: str = "grid"
    grids: list[int] = field(default_factory=lambda: [32])
    match: str = "all"
    prompt: str = "center"
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
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
        if self.mode not in ("grid", "everything", "gt"):
            raise SrwError(f"--mode must be grid, everything or gt, got {self.mode}")
        if self.mode == "everything" and len(self.grids) != 1:
            raise SrwError("--mode everything takes one --grid")
        if self.prompt not in PROMPTS:
            raise SrwError(f"--prompt must be one of {', '.join(PROMPTS)}, got {self.prompt}")

    def evaluate_image(self, sample, teacher, students) -> list:
        """This mode's results for one image."""
        if self.mode == "grid":
            return evaluate_image(sample, teacher, students, self.grids, self.match, self.points_per_batch)
        if self.mode == "gt":
            return evaluate_image_gt(sample, teacher, students, self.prompt, self.points_per_batch)
        return evaluate_image_everything(sample, teacher, students, self.grids[0], points_per_batch=self.points_per_batch,
                                         pred_iou_thresh=self.pred_iou_thresh,
                                         stability_score_thresh=self.stability_thresh)

    def report(self, results: list, labels: list[str]) -> tuple[dict, list[dict], str]:
        """This mode's summary, per-image rows and Markdown table."""
        if self.mode == "gt":
            summary, table = summarize_gt(results, labels, self.prompt)
            return summary, results, table
        if self.mode == "everything":
            summary, table = summarize_everything(results, labels, self.grids[0])
            return summary, results, table
        summary = {**summarize(results, labels, self.grids), "match": self.match}
        return summary, grid_rows(results), markdown_table(summary, labels, self.grids)


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


def row_key(result) -> str:
    return result["key"] if isinstance(result, dict) else result.key


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
        total = len(index_shards(paths)) if config.progress and ctx.is_main else 0  # headers only: fast
        total = min(total, config.limit) if config.limit is not None else total
        bar = tqdm(total=total, unit="img", desc="eval", disable=not (config.progress and ctx.is_main))
        for index, sample in enumerate(shards.iterate_shards(paths)):
            if config.limit is not None and index >= config.limit:
                break
            if index % ctx.world_size == ctx.rank:
                results += config.evaluate_image(sample, teacher, students)
                bar.update(ctx.world_size)
        bar.close()
        if ctx.is_distributed:
            gathered = [None] * ctx.world_size
            dist.all_gather_object(gathered, results)
            results = [result for part in gathered for result in part]
        if not results:
            raise SrwError("no images were evaluated")
        summary, rows, table = config.report(results, labels)
        summary.update(mode=config.mode, grids=config.grids, runs=labels, students=[str(s) for s in config.students],
                       sam_checkpoint=str(checkpoint_path), images=len({row_key(r) for r in results}))
        if ctx.is_main:
            write_report(config.out, summary, rows, table)
            print(f"eval: {summary['images']} images; report: {config.out}", file=sys.stderr)
        return summary
