"""The command lines' wiring, one package per task (``sam``, ``cls``, ``clip``), each exporting its ``PROGRAM``
(a table of subcommands), and the options derived from configuration dataclasses (``config_args``).

These modules (and ``mobilesam_srw.cli``) are the only place where the core reaches the stages.
"""
