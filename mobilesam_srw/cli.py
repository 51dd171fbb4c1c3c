"""``srw-sam``: the command line, a thin layer over the library.

Each subcommand lives in its own module and registers itself through
:data:`SUBCOMMANDS`, a plain dict of name -> ``(add_arguments, run)``. The CLI only
parses arguments, calls the library, prints :class:`SrwError` as one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from mobilesam_srw import __version__
from mobilesam_srw.errors import SrwError

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _subcommands() -> dict[str, tuple[str, AddArguments, Run]]:
    """Name -> (one-line help, add_arguments, run). Each ``run`` imports its stage lazily."""
    from mobilesam_srw.commands import demo, evaluate, export, figures, precompute, sample_data, train

    return {
        "demo": (demo.HELP, demo.add_arguments, demo.run),
        "precompute": (precompute.HELP, precompute.add_arguments, precompute.run),
        "train": (train.HELP, train.add_arguments, train.run),
        "export": (export.HELP, export.add_arguments, export.run),
        "eval": (evaluate.HELP, evaluate.add_arguments, evaluate.run),
        "heatmap": (figures.HEATMAP_HELP, figures.add_heatmap_arguments, figures.run_heatmap),
        "compare": (figures.COMPARE_HELP, figures.add_compare_arguments, figures.run_compare),
        "make-sample-data": (sample_data.HELP, sample_data.add_arguments, sample_data.run),
    }


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors in one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="srw-sam",
        description="Distil SAM's image encoder into MobileSAM's TinyViT with Sample-wise Re-Weighting "
        "(Yu et al., ACCV 2024).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_line, add_arguments, run) in _subcommands().items():
        sub = commands.add_parser(name, help=help_line, description=help_line)
        add_arguments(sub)
        sub.set_defaults(command_function=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command_function", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.command_function(args) or 0)
    except SrwError as error:
        print(f"srw-sam {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"srw-sam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
