"""Argument parsing for each ``srw-sam`` subcommand; each module has ``add_arguments`` and ``run``.

These modules are the only place where the core reaches the stages (they wire the CLI).
"""
