"""Configuration fields that carry their command-line help, choices and bounds.

A configuration is a dataclass; each field is declared once with :func:`option`, and both
the library's validation (:func:`check_options`) and the CLI's argparse options
(``mobilesam_srw.commands.config_args``) are derived from it, so a default or a choice
list is never written twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from mobilesam_srw.errors import SrwError


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its CLI metadata.

    Args:
        default: the default (omit for a required field).
        help: one-line help for ``--help``.
        choices: allowed values.
        minimum: the value must be >= this.
        above: the value must be > this.
        maximum: the value must be <= this (e.g. a size bounded by what a model accepts).
        factory: a default factory instead of ``default``.
        flag: the option's spelling when not ``--field-name`` (e.g. ``--student`` with ``dest``, or
            ``--no-progress`` for a true-by-default boolean).
        cli: false for fields the command line does not expose.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "above": above,
                "maximum": maximum, "flag": flag, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _values(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_options(config: Any) -> None:
    """Raise :class:`SrwError` naming the option for any value outside its choices or bounds,
    or any float that is not finite."""
    for field in dataclasses.fields(config):
        if "help" not in field.metadata:
            continue
        name = flag_of(field)
        value = getattr(config, field.name)
        if value is None:
            continue
        choices = field.metadata["choices"]
        for item in _values(value):
            if choices is not None and item not in choices:
                raise SrwError(f"{name} must be one of {', '.join(map(str, choices))}, got {item}")
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise SrwError(f"{name} must be a finite number, got {item}")
            if field.metadata["minimum"] is not None and item < field.metadata["minimum"]:
                raise SrwError(f"{name} must be >= {field.metadata['minimum']:g}, got {item}")
            if field.metadata["above"] is not None and item <= field.metadata["above"]:
                raise SrwError(f"{name} must be > {field.metadata['above']:g}, got {item}")
            if field.metadata.get("maximum") is not None and item > field.metadata["maximum"]:
                raise SrwError(f"{name} must be <= {field.metadata['maximum']:g}, got {item}")


def default_of(config_class: type, name: str) -> Any:
    """The default of field ``name`` of a configuration dataclass (so another configuration can reuse it
    without writing it again)."""
    field = {field.name: field for field in dataclasses.fields(config_class)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default
