"""``srw-sam``, ``srw-cls`` and ``srw-clip``: the command lines, a thin layer over the library.

Each task exports one :class:`~mobilesam_srw.commands.config_args.Program` (``mobilesam_srw.commands.<task>``):
its description and a table of name -> :class:`~mobilesam_srw.commands.config_args.Subcommand`. This module
only builds a program's parser (the options of the subcommand being run, nothing else imported), calls it,
prints a user's error (:class:`SrwError`, a full disk, a forbidden folder) as one line and exits 2.

``python -m mobilesam_srw.<task>`` is the same program as its console script, so ``torchrun -m`` works
alike for all three (``python -m mobilesam_srw`` is ``srw-sam``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading
from typing import Iterator, Sequence

from mobilesam_srw import __version__
from mobilesam_srw.commands.config_args import Program
from mobilesam_srw.errors import SrwError

# A full disk or quota, a read-only or forbidden folder: the user's to fix, said in one line.
USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST)  # the last two: a path through or onto a file

STAGES = ("mobilesam_srw.data_prep", "mobilesam_srw.eval", "mobilesam_srw.viz")  # each checks its checkout on import
# Program name -> the task module that exports its PROGRAM.
PROGRAMS = {"srw-sam": "mobilesam_srw.commands.sam", "srw-cls": "mobilesam_srw.commands.cls",
            "srw-clip": "mobilesam_srw.commands.clip"}


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors in one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def program(name: str) -> Program:
    """The :class:`Program` of ``name`` (a key of :data:`PROGRAMS`)."""
    return importlib.import_module(PROGRAMS[name]).PROGRAM


def build_parser(spec: Program, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``spec``; only the subcommand named in ``argv`` gets its options (and imports its library).

    Args:
        spec: the program.
        argv: the arguments about to be parsed (empty: every subcommand with its help line only).
    """
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = _OneLineErrorParser(prog=spec.name, description=spec.description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in spec.subcommands.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            command.add_arguments(sub)
        sub.set_defaults(command_function=command.run)
    return parser


def one_line(error: SrwError) -> str:
    """The message of ``error``; one raised in a DataLoader worker arrives wrapped in the worker's traceback,
    whose last line is ``mobilesam_srw.errors.SrwError: <message>``."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1].split(f"{SrwError.__module__}.{SrwError.__name__}: ", 1)[-1]


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """While the block runs, ``kill`` (SIGTERM) interrupts it as Ctrl-C does, so its clean-up runs (lock files,
    temporary files, a folder made by a job that wrote nothing); in the main thread only, as Python allows."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_program(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand; a user error is one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    if getattr(args, "command_function", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        with _interrupt_on_sigterm():
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


def run(name: str, argv: Sequence[str] | None = None) -> int:
    """Run program ``name`` (``srw-sam``, ``srw-cls``, ``srw-clip``) on ``argv`` (default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    spec = program(name)
    try:
        for stage in STAGES:  # light packages whose import refuses a core and stages of two checkouts
            importlib.import_module(stage)
        if spec.needs is not None:
            module, install = spec.needs
            try:
                importlib.import_module(module)
            except ImportError:
                raise SrwError(install) from None
        parser = build_parser(spec, argv)  # imports the chosen subcommand's configuration
    except SrwError as error:
        print(f"{name}: error: {one_line(error)}", file=sys.stderr)
        return 2
    return run_program(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``srw-sam``."""
    return run("srw-sam", argv)


def cls_main(argv: Sequence[str] | None = None) -> int:
    """``srw-cls``."""
    return run("srw-cls", argv)


def clip_main(argv: Sequence[str] | None = None) -> int:
    """``srw-clip`` (needs the ``clip`` extra: open_clip)."""
    return run("srw-clip", argv)
