"""The ``chaosfm`` command line: one subcommand per job (``chaosfm.jobs``); parsing, printing,
exit codes, nothing else."""

from chaosfm.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
