"""``chaosfm datasets`` and ``chaosfm data check``."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import Parser


def cmd_datasets(args: argparse.Namespace) -> None:
    from chaosfm.jobs import data

    show("built-in datasets", data.datasets())


def cmd_data_check(args: argparse.Namespace) -> None:
    from chaosfm.jobs import data

    summary = data.check(args.path, repair=args.repair)
    say(("ok", "green"), f" {args.path}: {summary['kind']} data, {summary['rows']:,} rows, "
        f"{len(summary['assets'])} asset(s)")
    for asset, info in summary["assets"].items():
        say(f"  {asset}: {info['rows']:,} rows, {info['start']} to {info['end']}")
    for message in summary["repairs"]:
        say(f"  repaired: {message}")


def add(commands: Any) -> None:
    p = commands.add_parser("datasets", help="list the built-in datasets")
    p.set_defaults(run=cmd_datasets)

    data = commands.add_parser("data", help="inspect and check data")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=Parser)
    p = data_commands.add_parser("check", help="validate a CSV/Parquet file or a built-in dataset")
    p.add_argument("path", help="file path or built-in name")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed and say what was done")
    p.set_defaults(run=cmd_data_check)
