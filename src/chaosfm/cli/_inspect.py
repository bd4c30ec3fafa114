"""``chaosfm inspect RUN``: a model run's parameters, layer by layer, and its config."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import common, overrides


def cmd_inspect(args: argparse.Namespace) -> None:
    from chaosfm.jobs import inspect

    values = overrides(args, {}, ("out",))
    values["run"] = str(args.run_dir)
    report = inspect.run(inspect.read(args.config, values))
    show(f"run: {args.run_dir}", report["summary"])
    show(f"parameters: {report['total']:,} in {len(report['parameters'])} arrays", report["parameters"])
    if report["out"] is not None:
        say(f"wrote {report['out']}/parameters.csv and inspect.json")


def add(commands: Any) -> None:
    p = commands.add_parser("inspect", help="a model run's parameters per layer (shape, count, |w|, std) and config",
                            parents=common("out", "config", "set", helps={
                                "out": "folder for parameters.csv and inspect.json (default: none written)"}))
    p.add_argument("run_dir", help="a run folder of chaosfm train or chaosfm stage")
    p.set_defaults(run=cmd_inspect)
