"""``chaosfm multitask``: the long-horizon multitask head."""

from __future__ import annotations

import argparse
import time
from typing import Any

from chaosfm.cli._output import cell, say, show
from chaosfm.cli._parser import READ_FLAGS, common, overrides

_FLAGS = ("data", "horizon", "threshold", "vol_horizon", "cutoff", "val_fraction", "embargo", "segment_length",
          "burn_in", "steps", "seed", "out", "resume")


def cmd_multitask(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.evaluate import multitask_table
    from chaosfm.jobs import multitask

    config = multitask.read(args.config, overrides(args, multitask.FLAGS, _FLAGS))
    started = time.perf_counter()
    metrics = multitask.run(config)
    title = (f"{config.data}: {config.horizon}-day direction (±{config.threshold:g}), 0.1-0.9 quantile interval and "
             f"{config.vol_horizon}-day vol, cutoff {config.cutoff}")
    show(title, multitask_table(metrics))
    for name, entry in metrics["classes"].items():
        if entry.get("confusion"):
            frame = pd.DataFrame(entry["confusion"], columns=["pred down", "pred flat", "pred up"])
            frame.insert(0, "true", ["down", "flat", "up"])
            show(f"{name}: confusion of the direction head", frame)
    fresh = metrics["classes"]["fresh"]
    say(
        f"fresh: [0.1, 0.9] quantile interval coverage {cell(fresh.get('coverage_80'))} over "
        f"{fresh['n_windows']} windows "
        f"({fresh['n_nonoverlapping']} non-overlapping); nominal 0.8"
    )
    say(f"wrote {config.out}/metrics.json, table.csv, predictions.csv and the model in "
        f"{time.perf_counter() - started:.0f} s")


def add(commands: Any) -> None:
    p = commands.add_parser("multitask", help="train and score the long-horizon multitask head (direction, quantiles, vol)",
                            parents=common("cutoff", "seed", "out", "config", "resume", "set", *READ_FLAGS))
    p.add_argument("--data", help="built-in name or CSV/Parquet path of market data (default: sp500)")
    p.add_argument("--horizon", type=int, help="H: days ahead of the forward log return (default 90)")
    p.add_argument("--threshold", type=float, help="direction is up/down beyond ±threshold (default 0.05)")
    p.add_argument("--vol-horizon", type=int, help="days of the forward realized volatility (default 30)")
    p.add_argument("--val-fraction", type=float, help="share of the pre-cutoff rows kept for validation (default: 0.15)")
    p.add_argument("--embargo", type=int, help="rows after each split boundary where no label may start (default: 5)")
    p.add_argument("--segment-length", type=int, help="rows per truncated-BPTT segment (default: 128)")
    p.add_argument("--burn-in", type=int, help="first rows of a training window that only warm the state (default: 128)")
    p.add_argument("--steps", type=int, help="optimizer updates (train.steps; default: 100)")
    p.set_defaults(run=cmd_multitask)
