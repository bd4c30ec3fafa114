"""``chaosfm tune``: walk-forward tuning of the online predictor."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from chaosfm._cli_common import _cell, _table, console


def cmd_tune(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm._config import ConfigError, parse_config, read_config
    from chaosfm._tune import TuneConfig, run_tune
    from chaosfm.predictor import StreamConfig

    keys = ("data", "asset", "cutoff", "cutoff_fraction", "length", "max_memory", "horizon", "step",
            "max_folds", "num_samples", "metric", "trials", "storage", "study", "seed",
            "heartbeat_seconds", "retries", "out")
    values: dict[str, Any] = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if "out" in values:
        values["out"] = str(values["out"])
    if args.base is not None:
        values["base"] = read_config(StreamConfig, args.base).model_dump(mode="json")
    if args.config is not None:
        config = read_config(TuneConfig, args.config, values)
    else:
        if "data" not in values:
            raise ConfigError("--data is required (or --config FILE with a data key)")
        config = parse_config(TuneConfig, values, "flags")
    started = time.perf_counter()
    metrics = run_tune(config)
    rows = pd.read_csv(config.out / "trials.csv")
    done = rows[rows["state"] == "COMPLETE"].sort_values("value").head(5)
    shown = ["number", "value", "worker", *[c for c in done.columns if c.startswith("params.")]]
    console.print(_table(f"{config.study}: best {len(done)} of {len(rows)} trials ({config.metric}, lower is better)",
                         done[shown].rename(columns=lambda c: c.rsplit(".", 1)[-1])))
    console.print(
        f"best {config.metric} {_cell(metrics['best_value'])} (trial {metrics['best_trial']}); base config "
        f"{_cell(metrics['base_value'])}; {metrics['trials']['complete']} complete trials over "
        f"{metrics['folds']} folds of {config.data} through {metrics['trained_through']}"
    )
    console.print(f"wrote {config.out}/best.yaml (chaosfm stream --config), trials.csv and metrics.json "
                  f"in {time.perf_counter() - started:.0f} s")


def add_commands(commands: Any) -> None:
    """Add ``tune`` to the ``commands`` subparsers."""
    p = commands.add_parser("tune", help="walk-forward tuning of the online predictor with Optuna (TPE)")
    p.add_argument("--data", help="built-in name or CSV/Parquet path")
    p.add_argument("--asset", help="asset of a multi-asset frame (default: the first)")
    p.add_argument("--cutoff", help="last timestamp tuning may see (default: 70%% of the rows)")
    p.add_argument("--cutoff-fraction", type=float, help="default cutoff as a share of the rows (0.7)")
    p.add_argument("--length", type=int, help="rows ending at the cutoff tuned on (default 1500)")
    p.add_argument("--max-memory", type=int, help="rows each fold's predictor is fitted on (default 250)")
    p.add_argument("--horizon", type=int, help="steps scored after each fold's cutoff (default 5)")
    p.add_argument("--step", type=int, help="rows between fold cutoffs (default: horizon)")
    p.add_argument("--max-folds", type=int, help="at most this many folds, evenly spaced (default 8)")
    p.add_argument("--num-samples", type=int, help="forecast sample paths per fold (default 100)")
    p.add_argument("--metric", choices=["crps", "mae", "rmse", "smape", "mase", "wql"], help="score minimised (default crps)")
    p.add_argument("--trials", type=int, help="completed trials in the study, over all workers (default 20)")
    p.add_argument("--storage", help="Optuna RDB URL shared by workers (default sqlite:///OUT/optuna.db)")
    p.add_argument("--study", help="study name (default chaosfm-tune); same storage and study: one search")
    p.add_argument("--seed", type=int, help="TPE and forecast seeds derive from it")
    p.add_argument("--heartbeat-seconds", type=int, help="trial heartbeat; silent for 2x: failed, re-queued (30)")
    p.add_argument("--retries", type=int, help="times an interrupted trial is re-queued (default 2)")
    p.add_argument("--base", type=Path, help="YAML StreamConfig the tuned values are written into")
    p.add_argument("--config", type=Path, help="YAML TuneConfig (with space: and base:); flags override it")
    p.add_argument("--out", type=Path, help="folder for best.yaml, trials.csv, metrics.json (default runs/tune)")
    p.set_defaults(run=cmd_tune)
