"""``srw-clip export``: a run's student with the teacher's text tower, as an open_clip ``local-dir:`` model."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.commands.config_args import (
    Subcommand,
    add_config_arguments,
    config_from_args,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.options import option

HELP = "write a trained student as an open_clip model (student image tower, the teacher's text tower)"


@dataclass(kw_only=True)
class ClipExportConfig:
    """``srw-clip export``: which run, where, and the teacher whose text tower goes with it."""

    run: Path = option(help="run folder of srw-clip train (or its student.pt)")
    out: Path = option(help="export folder; load it with open_clip.create_model_and_transforms('local-dir:<out>')")
    teacher_checkpoint: Path | None = option(None, help="the teacher's checkpoint (default: the path its precompute "
                                                        "recorded)")
    format: str = option("open_clip", choices=("open_clip", "onnx"),
                         help="open_clip: a local-dir: model; onnx: the student image tower alone, as <out>/image_encoder.onnx")
    opset: int = option(17, minimum=17, help="ONNX opset (--format onnx)")


ONNX_FILE = "image_encoder.onnx"


def export_onnx_run(config: ClipExportConfig) -> Path:
    """The student image tower as ONNX: normalised ``[batch, 3, S, S]`` pixels in (the teacher's
    preprocessing), the ``[batch, D]`` image embedding out (unnormalised, as ``encode_image``)."""
    from mobilesam_srw.clip.checkpoint import load_clip_student
    from mobilesam_srw.lock import output_lock
    from mobilesam_srw.onnx_export import (
        check_opset,
        export_image_encoder_onnx,
        require_onnx,
    )

    require_onnx("onnx", "onnxruntime")
    check_opset(config.opset)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SrwError(f"--out {out} exists and is not a folder")
    student, record = load_clip_student(config.run)
    with output_lock(out):  # one writer; a failed export leaves no folder
        return export_image_encoder_onnx(student, tuple(record["image_size"]), out / ONNX_FILE, config.opset,
                                         output_name="image_embeds")


def export_run(config: ClipExportConfig) -> Path:
    """Export the run's student with the teacher it was distilled from; returns the folder."""
    from mobilesam_srw.clip.checkpoint import load_clip_student
    from mobilesam_srw.clip.export import export_distilled_clip
    from mobilesam_srw.clip.teacher_record import rebuild_teacher

    student, record = load_clip_student(config.run)
    teacher = rebuild_teacher(record["teacher"], config.teacher_checkpoint, record.get("teacher_checkpoint"))
    facts = {"run": str(config.run), **{name: record.get(name) for name in ("loss", "tau", "normalizer", "steps")}}
    return export_distilled_clip(student, teacher, record["student"], config.out, record=facts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ClipExportConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(ClipExportConfig, args)
    if config.format == "onnx":
        print(f"wrote {export_onnx_run(config)}", file=sys.stderr)
        return 0
    out = export_run(config)
    print(f"wrote {out} (open_clip.create_model_and_transforms('local-dir:{out}'); "
          f"open_clip.get_tokenizer('local-dir:{out}'))", file=sys.stderr)
    return 0


COMMAND = Subcommand(HELP, add_arguments, run)
