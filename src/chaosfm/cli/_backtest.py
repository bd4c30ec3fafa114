"""``chaosfm backtest``: trade an evaluation's forecasts, with the statistics of how far to trust it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import UsageError, common, overrides, split

SHOWN = ("sharpe", "sharpe_se", "psr", "dsr", "annual_return", "max_drawdown")


def summary_table(metrics: dict[str, Any]) -> None:
    """One row per strategy: the run's statistics and the Sharpe ratio on fresh rows alone."""
    import pandas as pd

    rows = []
    for name, entry in metrics["strategies"].items():
        fresh = entry["by_class"]["fresh"]
        rows.append({"strategy": name, "days": entry["days"], **{k: entry[k] for k in SHOWN},
                     "fresh sharpe": fresh["sharpe"], "fresh days": fresh["days"]})
    pbo = metrics["pbo"]["value"]
    show(f"backtest: {metrics['n_trials']} strategies, holding {metrics['holding']} rows, "
         f"PBO {'–' if pbo is None else f'{pbo:.3f}'}", pd.DataFrame(rows))


def cmd_backtest(args: argparse.Namespace) -> None:
    from chaosfm.jobs import backtest

    if args.config is None and args.eval_dir is None:
        raise UsageError("chaosfm backtest: --run EVAL_DIR is required (or --config FILE with a run key)")
    values = overrides(args, backtest.FLAGS, ("eval_dir", "holding", "cost_bps", "impact", "out"))
    if args.rule:
        values["rules"] = split(args.rule)
    if args.models:
        values["models"] = split(args.models)
    config = backtest.read(args.config, values)
    metrics = backtest.run(config)
    summary_table(metrics)
    say(f"wrote {config.out}/metrics.json, {config.out}/pnl.parquet and {config.out}/report.html")


def add(commands: Any) -> None:
    p = commands.add_parser("backtest", help="trade an evaluation's forecasts: P&L, Sharpe, PSR, DSR, PBO, tearsheet",
                            parents=common("out", "config", "set"))
    p.add_argument("--run", dest="eval_dir", type=Path, metavar="EVAL_DIR",
                   help="run folder of `chaosfm evaluate` (its forecasts.parquet and config.yaml; default: the "
                        "config's run key)")
    p.add_argument("--rule", help="rules, comma-separated: sign_median, kelly, vol_target, long_short "
                                  "(default: sign_median)")
    p.add_argument("--models", help="models to trade, comma-separated (default: every model of the forecasts)")
    p.add_argument("--holding", type=int, help="rows each position is held, at most the horizon (default: the horizon)")
    p.add_argument("--cost-bps", type=float, help="proportional cost in basis points of the capital traded (default: 1)")
    p.add_argument("--impact", type=float, help="quadratic impact coefficient: cost impact * trade^2 (default: 0)")
    p.set_defaults(run=cmd_backtest)
