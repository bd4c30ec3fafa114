"""``chaosfm stream`` and ``chaosfm tune``: the online predictor and its walk-forward tuning."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chaosfm.cli._output import cell, console, say, show
from chaosfm.cli._parser import common, overrides


def cmd_stream(args: argparse.Namespace) -> int:
    from rich.console import Console

    from chaosfm.jobs import stream

    values = overrides(args, stream.FLAGS, ("data", "out", "asset", "length", "column", "seed", "on_bad_line",
                                            "snapshot", "snapshot_every", "restore", "metrics_port", "cache_dir",
                                            "calibration_gamma", "x64"))
    values.update({"stream.deterministic": True if args.deterministic else None,
                   "stream.compilation_cache": False if args.no_compilation_cache else None,
                   "stream.warm_up": False if args.no_warm_up else None})
    config = stream.read(args.config, values)

    def report_bad(error: Exception) -> None:
        print(f"chaosfm: error: {error} (skipped; the predictor keeps its last good state)", file=sys.stderr, flush=True)

    def report_ready(info: dict[str, Any]) -> None:
        if info["metrics_url"]:
            print(f"chaosfm: serving Prometheus metrics on {info['metrics_url']}", file=sys.stderr, flush=True)

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row, default=str), flush=True)

    received: list[int] = []

    def terminate(signum: int, frame: Any) -> None:  # SIGTERM ends the stream as SIGINT does: outputs kept
        received.append(signum)
        raise KeyboardInterrupt

    lines = None
    if config.stdin:  # a feed URL (also live) is read by the job
        # A byte that is not UTF-8 must cost its line (reported, skipped), not the stream: decoding
        # strictly would raise inside the loop over stdin.
        if hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="replace")
        lines = stream.live_lines(sys.stdin)
    main_thread = threading.current_thread() is threading.main_thread()  # only there can it take signals
    # SIGINT too, explicitly: a process started with SIGINT ignored (a background job of a script,
    # a test runner's worker) inherits that, and Ctrl-C or `kill -INT` would then be lost.
    before = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        metrics = stream.run(config, lines=lines,
                             on_prediction=emit if config.live else None, on_bad_line=report_bad,
                             on_ready=report_ready, column_given=args.column is not None)
        code = 0
    except stream.StreamInterrupted as stop:
        metrics, code = stop.metrics, 128 + (received[0] if received else signal.SIGINT)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    # With --data - stdout carries one JSON prediction per line; keep the summary off it.
    target = Console(stderr=True, width=140, markup=False) if config.live else console()
    _stream_summary(target, metrics)
    snapshot = config.stream.snapshot
    target.print(f"ready in {cell(metrics['startup_seconds'])} s, first step {cell(metrics['first_step_ms'])} ms"
                 + (f"; snapshot {snapshot} ({metrics['snapshots_written']} writes)" if snapshot else ""))
    if code:
        target.print(f"interrupted after {metrics['observations']} observations")
    target.print(f"wrote {config.out}/predictions.csv, telemetry.csv, metrics.json and telemetry.png")
    return code


def _stream_summary(target: Any, metrics: dict[str, Any]) -> None:
    import pandas as pd

    from chaosfm.cli._output import table

    rows = [{"model": who, **metrics[who]} for who in ("predictor", "random_walk") if who in metrics]
    if rows:
        target.print(table(f"one-step-ahead scores over {metrics.get('scored_steps', 0)} steps", pd.DataFrame(rows)))
    latency = metrics.get("latency_ms", {})
    flags = ", ".join(f"{k} {v}" for k, v in metrics.get("flags", {}).items())
    target.print(f"step latency p50 {cell(latency.get('p50'))} ms, p99 {cell(latency.get('p99'))} ms; flags: {flags}")


_TUNE_FLAGS = ("data", "asset", "cutoff", "cutoff_fraction", "length", "max_memory", "horizon", "every", "max_windows",
               "num_samples", "metric", "trials", "storage", "study", "seed", "heartbeat_seconds", "retries", "out", "x64")


def cmd_tune(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.cli._parser import UsageError
    from chaosfm.jobs import tune

    if args.config is None and not args.data:
        raise UsageError("chaosfm tune: --data is required (or --config FILE with a data key)")
    config = tune.read(args.config, overrides(args, tune.FLAGS, _TUNE_FLAGS), base=args.base)
    started = time.perf_counter()
    metrics = tune.run(config)
    rows = pd.read_csv(config.out / "trials.csv")
    done = rows[rows["state"] == "COMPLETE"].sort_values("value").head(5)
    shown = ["number", "value", "worker", *[c for c in done.columns if c.startswith("params.")]]
    show(f"{config.study}: best {len(done)} of {len(rows)} trials ({config.metric}, lower is better)",
         done[shown].rename(columns=lambda c: c.rsplit(".", 1)[-1]))
    say(
        f"best {config.metric} {cell(metrics['best_value'])} (trial {metrics['best_trial']}); base config "
        f"{cell(metrics['base_value'])}; {metrics['trials']['complete']} complete trials over "
        f"{metrics['folds']} folds of {config.data} through {metrics['trained_through']}"
    )
    say(f"wrote {config.out}/best.yaml (chaosfm stream --config), trials.csv and metrics.json "
        f"in {time.perf_counter() - started:.0f} s")


def add(commands: Any) -> None:
    p = commands.add_parser("stream", help="run the online stochastic predictor over a series, stdin or a live feed",
                            parents=common("data", "out", "seed", "config", "set", "x64", required=("data",), helps={
                                "data": "a dataset name or CSV/Parquet path, - for stdin, or a live feed "
                                        "ws://HOST:PORT/PATH or tcp://HOST:PORT (reconnects: --set feed.max_retries=N)"}))
    p.add_argument("--column", help="column to stream (default: close; x0 for trajectories)")
    p.add_argument("--asset", help="asset of a multi-asset frame (default: the first)")
    p.add_argument("--length", type=int, help="stream only the first N rows (default: every row)")
    p.add_argument("--on-bad-line", choices=["raise", "skip"],
                   help="bad input: stop (default for files) or report and skip (default for stdin)")
    p.add_argument("--snapshot", type=Path, help="write the predictor state here (end of run, and every N steps; default: none)")
    p.add_argument("--snapshot-every", type=int, help="steps between snapshots (default: only at the end)")
    p.add_argument("--restore", type=Path, help="resume from this snapshot (same --config it was written with; default: a cold start)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT (0: a free port; default: off)")
    p.add_argument("--cache-dir", type=Path,
                   help="persistent compilation cache (default $CHAOSFM_CACHE_DIR or the user cache dir); must be"
                        " yours and not group/other-writable, else the default is used")
    p.add_argument("--no-compilation-cache", action="store_true", help="do not use the persistent compilation cache")
    p.add_argument("--no-warm-up", action="store_true", help="skip the warm-up pass before the first observation")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible: highest matmul precision, pinned PRNG")
    p.add_argument("--calibration-gamma", type=float, metavar="GAMMA",
                   help="adaptive conformal inference on the one-step quantiles: each miss moves the levels by GAMMA "
                        "(0.005 is Gibbs & Candes'; default 0: off)")
    p.set_defaults(run=cmd_stream)


def add_tune(commands: Any) -> None:
    p = commands.add_parser("tune", help="walk-forward tuning of the online predictor with Optuna (TPE)",
                            parents=common("data", "cutoff", "seed", "out", "config", "set", "x64"))
    p.add_argument("--asset", help="asset of a multi-asset frame (default: the first)")
    p.add_argument("--cutoff-fraction", type=float, help="default cutoff as a share of each asset's rows (0.8)")
    p.add_argument("--length", type=int, help="rows ending at the cutoff tuned on (default 1500)")
    p.add_argument("--max-memory", type=int, help="rows each fold's predictor is fitted on (default 250)")
    p.add_argument("--horizon", type=int, help="steps scored after each fold's cutoff (default 5)")
    p.add_argument("--every", type=int, help="rows between fold cutoffs (default: the horizon)")
    p.add_argument("--max-windows", type=int, help="at most this many folds, evenly spaced (default: 8)")
    p.add_argument("--num-samples", type=int, help="forecast sample paths per fold (default 100)")
    p.add_argument("--metric", choices=["crps", "mae", "rmse", "smape", "mase", "wql"],
                   help="score minimised (default crps)")
    p.add_argument("--trials", type=int, help="completed trials in the study, over all workers (default 20)")
    p.add_argument("--storage", help="Optuna RDB URL shared by workers, postgresql://USER:PASS@HOST:5432/DB"
                   " across machines (default sqlite:///OUT/optuna.db)")
    p.add_argument("--study", help="study name (default chaosfm-tune); same storage and study: one search")
    p.add_argument("--heartbeat-seconds", type=int, help="trial heartbeat in seconds; silent for 2x: failed, re-queued (default: 30)")
    p.add_argument("--retries", type=int, help="times an interrupted trial is re-queued (default 2)")
    p.add_argument("--base", type=Path, help="YAML StreamConfig the tuned values are written into (default: the predictor's defaults)")
    p.set_defaults(run=cmd_tune)
