"""``chaosfm datasets``, ``chaosfm data check``, ``data stage`` and ``data archive``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import READ_FLAGS, Parser, common, location


def cmd_datasets(args: argparse.Namespace) -> None:
    from chaosfm.jobs import data

    show("built-in datasets", data.datasets())


def cmd_data_check(args: argparse.Namespace) -> None:
    from chaosfm.jobs import data

    reading = {name: getattr(args, name) for name in READ_FLAGS if getattr(args, name) is not None}
    summary = data.check(args.path, write=args.write, force=args.force, **reading)
    say(("ok", "green"), f" {args.path}: {summary['kind']} data, {summary['rows']:,} rows, "
        f"{len(summary['assets'])} asset(s)")
    for asset, info in summary["assets"].items():
        say(f"  {asset}: {info['rows']:,} rows, {info['start']} to {info['end']}")
    if summary["timezone"]:
        say(f"  timestamps converted to UTC from {summary['timezone']}")
    if summary["channels"]:
        say("  channels: " + ", ".join(f"{x} = {name}" for x, name in summary["channels"].items()))
    for message in summary["repairs"]:
        say(f"  repaired: {message}")
    if "written" in summary:
        say(f"wrote {summary['written']}")


def cmd_data_copy(args: argparse.Namespace) -> None:
    from chaosfm.jobs import data

    copy = data.stage if args.data_command == "stage" else data.archive
    done = copy(args.source, args.destination, force=bool(args.force))
    say(("ok", "green"), f" {args.data_command}: {done.source} -> {done.destination}: {done.files} files "
        f"({done.bytes:,} bytes) copied, {done.skipped} ({done.skipped_bytes:,} bytes) already there"
        f"{f', {done.removed} removed' if done.removed else ''}, in {done.seconds:.1f} s; every sha256 checked")


def add(commands: Any) -> None:
    p = commands.add_parser("datasets", help="list the built-in datasets")
    p.set_defaults(run=cmd_datasets)

    data = commands.add_parser("data", help="inspect and check data")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=Parser)
    p = data_commands.add_parser("check", help="validate a CSV/Parquet file or a built-in dataset",
                                 parents=common(*READ_FLAGS))
    p.add_argument("path", help="file path or built-in name")
    p.add_argument("--write", type=Path, metavar="FILE",
                   help="save the checked (and repaired) data here in canonical columns: .csv, .parquet or .pq "
                        "(default: nothing written)")
    p.add_argument("--force", action="store_true", help="with --write: replace the file if it exists")
    p.set_defaults(run=cmd_data_check)

    for name, what, source, destination in (
        ("stage", "copy a folder from a cold tier (s3://, gs://, memory://, any fsspec URL) to a hot one (a local "
                  "disk), every file's sha256 checked; rerun to resume an interrupted copy",
         "folder to copy: an fsspec URL or a path", "where to copy it: a new folder, or the partial copy to resume"),
        ("archive", "copy a finished run folder or shard folder to a cold tier, every file's sha256 checked; refuses "
                    "a run still being written or whose meta.json hashes do not match",
         "the finished local run or shard folder", "where to copy it: an fsspec URL (s3://, gs://, memory://) or a path"),
    ):
        p = data_commands.add_parser(name, help=what, description=what)
        p.add_argument("source", type=location, help=source)
        p.add_argument("destination", type=location, help=destination)
        p.add_argument("--force", action="store_true",
                       help="update a destination that already holds a complete copy (or other files) to match the "
                            "source, removing files the source has not (default: refuse)")
        p.set_defaults(run=cmd_data_copy)
