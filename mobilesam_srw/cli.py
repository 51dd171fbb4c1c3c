"""``srw-sam``, ``srw-cls`` and ``srw-clip``: the command lines, a thin layer over the library.

Each subcommand lives in its own module (``mobilesam_srw.commands``) and each program lists its
subcommands in a plain dict of name -> ``(help, add_arguments, run)``. A program only parses
arguments, calls the library, prints :class:`SrwError` as one line and exits 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, Sequence

from mobilesam_srw import __version__
from mobilesam_srw.commands.config_args import config_command
from mobilesam_srw.errors import SrwError

# A full disk or quota, a read-only or forbidden folder: the user's to fix, said in one line.
USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                       errno.ENOTDIR, errno.EEXIST)  # the last two: a path through or onto a file

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


Subcommands = dict[str, tuple[str, AddArguments, Run]]


def _command(module) -> tuple[str, AddArguments, Run]:
    """A command module's ``HELP``, ``add_arguments`` and ``run``."""
    return module.HELP, module.add_arguments, module.run


def _subcommands() -> Subcommands:
    """``srw-sam``'s name -> (one-line help, add_arguments, run). Each ``run`` imports its stage lazily."""
    from mobilesam_srw.commands import demo, export, figures, precompute, sample_data

    return {
        "demo": _command(demo),
        "precompute": _command(precompute),
        "train": config_command("distil a MobileSAM student from precomputed teacher embeddings with patch-wise SRW",
                                "mobilesam_srw.sam.task:SamTrainConfig", "mobilesam_srw.sam.train:train"),
        "export": _command(export),
        "eval": config_command("evaluate students against the teacher's masks from stored embeddings (Table 6: "
                               "point grids, mIoU)", "mobilesam_srw.eval.evaluate:EvalConfig",
                               "mobilesam_srw.eval.evaluate:evaluate"),
        "heatmap": (figures.HEATMAP_HELP, figures.add_heatmap_arguments, figures.run_heatmap),
        "compare": (figures.COMPARE_HELP, figures.add_compare_arguments, figures.run_compare),
        "make-sample-data": _command(sample_data),
    }


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors in one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


SAM_DESCRIPTION = ("Distil SAM's image encoder into MobileSAM's TinyViT with Sample-wise Re-Weighting "
                   "(Yu et al., ACCV 2024).")


def build_parser(prog: str = "srw-sam", description: str = SAM_DESCRIPTION,
                 subcommands: Subcommands | None = None) -> argparse.ArgumentParser:
    """The parser of program ``prog`` with ``subcommands`` (default: ``srw-sam``'s)."""
    parser = _OneLineErrorParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_line, add_arguments, run) in (subcommands or _subcommands()).items():
        sub = commands.add_parser(name, help=help_line, description=help_line)
        add_arguments(sub)
        sub.set_defaults(command_function=run)
    return parser


def one_line(error: SrwError) -> str:
    """The message of ``error``; one raised in a DataLoader worker arrives wrapped in the worker's traceback,
    whose last line is ``mobilesam_srw.errors.SrwError: <message>``."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1].split(f"{SrwError.__module__}.{SrwError.__name__}: ", 1)[-1]


def run_program(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand; a user error is one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    if getattr(args, "command_function", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.command_function(args) or 0)
    except SrwError as error:
        print(f"{parser.prog} {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in USER_FIXABLE_ERRNOS:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"{parser.prog} {args.command}: error: {error.strerror}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``srw-sam``."""
    return run_program(build_parser(), argv)


def cls_main(argv: Sequence[str] | None = None) -> int:
    """``srw-cls``."""
    from mobilesam_srw.commands.cls import DESCRIPTION, SUBCOMMANDS

    return run_program(build_parser("srw-cls", DESCRIPTION, SUBCOMMANDS), argv)


CLIP_DESCRIPTION = ("Distil an open_clip image encoder into TinyViT with Sample-wise Re-Weighting (Yu et al., "
                    "ACCV 2024, Section 4.2), with zero-shot evaluation by the teacher's text tower.")


def _clip_subcommands() -> Subcommands:
    """``srw-clip``'s name -> (one-line help, add_arguments, run). Each ``run`` imports its stage lazily."""
    from mobilesam_srw.commands import clip_demo, clip_export

    return {
        "demo": _command(clip_demo),
        "precompute": config_command(
            "encode img2dataset image-text tars with the open_clip teacher into shards (run once, before training)",
            "mobilesam_srw.data_prep.clip_precompute:ClipPrecomputeConfig",
            "mobilesam_srw.data_prep.clip_precompute:run_clip_precompute"),
        "train": config_command(
            "distil a TinyViT student from the stored CLIP image embeddings with sample-wise SRW over the batch",
            "mobilesam_srw.clip.task:ClipTrainConfig", "mobilesam_srw.clip.task:train_clip"),
        "eval": config_command(
            "zero-shot classification of students and teacher on an ImageFolder (ImageNet-1K val: Table 5)",
            "mobilesam_srw.clip.evaluate:ClipEvalConfig", "mobilesam_srw.clip.evaluate:evaluate_clip"),
        "export": _command(clip_export),
    }


def clip_main(argv: Sequence[str] | None = None) -> int:
    """``srw-clip`` (needs the ``clip`` extra: open_clip)."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        print("srw-clip: error: open_clip is not installed; pip install 'mobilesam-srw[clip]'", file=sys.stderr)
        return 2
    return run_program(build_parser("srw-clip", CLIP_DESCRIPTION, _clip_subcommands()), argv)


if __name__ == "__main__":
    sys.exit(main())
