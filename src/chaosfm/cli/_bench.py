"""``chaosfm bench chaos``: forecasters of chaotic systems side by side."""

from __future__ import annotations

import argparse
import time
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import Parser, common, overrides, split


def cmd_bench_chaos(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.jobs import bench_chaos

    values = overrides(args, bench_chaos.FLAGS, ("test_trajectories", "windows", "length", "workers", "seed", "out"))
    for name in ("systems", "models"):
        if getattr(args, name):
            values[name] = split(getattr(args, name))
    config = bench_chaos.read(args.config, values, fast=args.fast)
    started = time.perf_counter()
    metrics = bench_chaos.run(config)
    summary = pd.DataFrame(metrics["summary"])
    columns = ["system", "model", "windows", "vpt_mean", "vpt_mean_low", "vpt_mean_high", "vpt_median", "vpt_ratio",
               "smape", "crps", "coverage_80"]
    show(f"valid prediction time (Lyapunov times) on fresh windows; ratio to {metrics['reference']}", summary[columns])
    show("median over systems", pd.DataFrame(metrics["across_systems"]))
    say(f"wrote {config.out}/table.md, summary.csv, vpt.png and report.html in {time.perf_counter() - started:.0f} s")


def add(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks: chaosfm beside the baselines of the field")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCH", parser_class=Parser, required=True)
    p = kinds.add_parser("chaos", help="forecasters of chaotic systems: VPT, sMAPE, CRPS, coverage per system",
                         parents=common("seed", "out", "config", "set"))
    p.add_argument("--fast", action="store_true", help="three systems, short trajectories, small models: minutes")
    p.add_argument("--systems", help="registry systems, comma-separated (default: every one with a published exponent)")
    p.add_argument("--models", help="forecaster names, comma-separated (default: last_value,ar,context_parroting,esn,ngrc,"
                                         "mlp_flow,flow_mamba)")
    p.add_argument("--test-trajectories", type=int, help="independent test trajectories per system (default: 10)")
    p.add_argument("--windows", type=int, help="forecast origins per test trajectory (default: 3)")
    p.add_argument("--length", type=int, help="rows per trajectory (default: 10000)")
    p.add_argument("--workers", type=int, help="systems fitted and scored at once, one process each (default: the CPU count)")
    p.set_defaults(run=cmd_bench_chaos)
