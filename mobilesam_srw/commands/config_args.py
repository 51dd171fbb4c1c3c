"""argparse options built from a configuration dataclass's fields (:func:`mobilesam_srw.options.option`).

Each default, choice list and help line is written once, on the field; the CLI derives its
options from it and builds the configuration from the parsed arguments without copying fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from mobilesam_srw.options import flag_of

Config = TypeVar("Config")


def _scalar_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is a list) of a field annotation such as ``int | None`` or ``list[str]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return args[0], True
    if args:  # X | None
        return _scalar_type(args[0])
    return annotation, False


def _default_text(field: dataclasses.Field) -> str:
    """`` (default X)`` for the help line, or nothing when the default is unset, empty, or already in the help."""
    if "(default" in field.metadata["help"]:  # the help says it in its own words
        return ""
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        made = field.default_factory()
        default = " ".join(map(str, made)) if isinstance(made, list) and made else dataclasses.MISSING
    if default is dataclasses.MISSING or default is None or default is False or default in ([], ()):  # 0 is shown
        return ""
    return f" (default {default})".replace("%", "%%")  # help is an argparse %-format string


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, exclude: Iterable[str] = ()) -> None:
    """Add an option per field of ``config_class`` that has CLI metadata, except ``exclude`` and the
    class's ``UNUSED_OPTIONS`` (inherited fields that a task does not use)."""
    exclude = {*exclude, *getattr(config_class, "UNUSED_OPTIONS", ())}
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if "help" not in meta or not meta["cli"] or field.name in exclude:
            continue
        kind, many = _scalar_type(hints[field.name])
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        options: dict[str, Any] = {"dest": field.name, "help": meta["help"]}
        if kind is bool:
            options["action"] = "store_false" if field.default else "store_true"
        else:
            options.update(type=kind if kind is not Path else Path, required=required)
            if many:
                options["nargs"] = "+"
            if meta["choices"]:
                options["choices"] = meta["choices"]
            options["help"] += _default_text(field)
            options["default"] = None  # unset options keep the dataclass default
            if kind in (int, float):
                options["metavar"] = "N" if kind is int else "X"
        parser.add_argument(flag_of(field), **options)


def config_from_args(config_class: type[Config], args: argparse.Namespace, **values: Any) -> Config:
    """``config_class`` from the parsed options it defines (unset ones keep their defaults) and ``values``."""
    names = {field.name for field in dataclasses.fields(config_class)}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return config_class(**{**given, **values})


def _imported(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Subcommand:
    """One entry of a program's table: its one-line help, how it adds its options to its parser, and how it
    runs the parsed arguments (returns the exit code). ``add_arguments`` is called only for the subcommand
    being run, so ``--help`` and every other subcommand start without importing its library."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Program:
    """A command-line program (``srw-sam``, ``srw-cls``, ``srw-clip``): its description and its table.

    Args:
        name: the program's name.
        description: one line for ``--help``.
        subcommands: name -> :class:`Subcommand`.
        needs: a module the program cannot run without, and the line saying how to install it.
    """

    name: str
    description: str
    subcommands: dict[str, Subcommand]
    needs: tuple[str, str] | None = None


def config_command(help: str, config: str, function: str, *, exclude: Iterable[str] = (),
                   values: dict[str, Any] | None = None,
                   report: Callable[[Any, Any], str] | None = None) -> Subcommand:
    """A subcommand that is one configuration dataclass, built from its options, handed to one library function.

    Args:
        help: the subcommand's one-line help.
        config: ``"module:ConfigClass"``; imported only when the subcommand is used, so the CLI starts fast.
        function: ``"module:function"``, called with the configuration.
        exclude: fields the subcommand does not offer as options.
        values: fields the subcommand sets itself (e.g. no distillation method for a teacher).
        report: ``(config, result) -> line`` printed to stderr when the function returns.
    """

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, _imported(config), exclude)

    def run(args: argparse.Namespace) -> int:
        configuration = config_from_args(_imported(config), args, **(values or {}))
        result = _imported(function)(configuration)
        if report is not None:
            print(report(configuration, result), file=sys.stderr)
        return 0

    return Subcommand(help, add_arguments, run)


def files_written(config: Any, paths: list) -> str:
    """The report line of a command that writes figure files into ``config.out``."""
    return f"wrote {len(paths)} files to {config.out}"
