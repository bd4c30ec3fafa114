"""The ``chaosfm`` command: parses flags into config objects and calls one library function.

Errors print one line and exit 2 (bad input: data, config, arguments) or 1 (a bug in chaosfm);
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from chaosfm import _cli_training, _cli_tune, _cli_world
from chaosfm._cli_common import _cell, _split, _table, console


class UsageError(Exception):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2 itself
        raise UsageError(f"{self.prog}: {message}")


# --- commands -------------------------------------------------------------------------------


def cmd_datasets(args: argparse.Namespace) -> None:
    from chaosfm.data import datasets

    console.print(_table("built-in datasets", datasets()))


def cmd_data_check(args: argparse.Namespace) -> None:
    from chaosfm.data import describe, load

    summary = describe(load(args.path, repair=args.repair))
    console.print(
        f"[green]ok[/green] {args.path}: {summary['kind']} data, {summary['rows']:,} rows, "
        f"{len(summary['assets'])} asset(s)"
    )
    for asset, info in summary["assets"].items():
        console.print(f"  {asset}: {info['rows']:,} rows, {info['start']} to {info['end']}")
    for message in summary["repairs"]:
        console.print(f"  repaired: {message}")


def _summary_table(metrics: dict[str, Any]) -> None:
    import pandas as pd

    shown = ("crps", "mase", "coverage_80", "valid_prediction_time", "smape", "directional_accuracy")
    for name, entry in metrics["datasets"].items():
        rows = []
        for model, summary in entry["models"].items():
            row = {"model": model, "fresh windows": summary["fresh"]["n_windows"]}
            row.update({k: v for k, v in summary["fresh"].items() if k in shown})
            rows.append(row)
        console.print(_table(f"{name}: scores on fresh windows (cutoff {entry['cutoff']})", pd.DataFrame(rows)))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from chaosfm._config import ConfigError, parse_config, read_config
    from chaosfm.pipelines import EvaluateConfig, run_evaluate

    protocol = {
        key: getattr(args, key)
        for key in ("horizon", "num_samples", "embargo", "step", "max_windows", "seed", "context_length")
        if getattr(args, key) is not None
    }
    names = _split(args.data)
    overrides: dict[str, Any] = {
        "datasets": [{"name": n} for n in names] if names else None,
        "models": _split(args.models),
        "cutoff": args.cutoff,
        "out": str(args.out) if args.out else None,
        "runs": [str(run) for run in args.run_dirs] if args.run_dirs else None,
    }
    if args.config is not None:
        settings = read_config(EvaluateConfig, args.config, overrides)
        if protocol:
            merged = {**settings.protocol.model_dump(), **protocol}
            settings = settings.model_copy(update={"protocol": parse_config(type(settings.protocol), merged, "flags")})
    else:
        if not names:
            raise ConfigError("--data is required (or --config FILE with a datasets key)")
        values = {k: v for k, v in overrides.items() if v is not None}
        settings = parse_config(EvaluateConfig, {**values, "protocol": protocol}, "flags")
    metrics = run_evaluate(settings)
    _summary_table(metrics)
    console.print(f"wrote {settings.out}/metrics.json and {settings.out}/report.html")


def cmd_train(args: argparse.Namespace) -> None:
    from chaosfm.train import read_train_run_file, run_train_tokenized

    config = read_train_run_file(args.config)
    result = run_train_tokenized(config, args.out, resume=args.resume)
    heldout = result.metrics.get("heldout") or {}
    if heldout:
        console.print(
            f"held-out perplexity {_cell(heldout.get('perplexity'))} (unigram "
            f"{_cell(heldout.get('unigram_perplexity'))}), accuracy {_cell(heldout.get('accuracy'))}, "
            f"top-5 {_cell(heldout.get('top5_accuracy'))} over {heldout.get('tokens')} codes"
        )
    console.print(f"wrote the run to {args.out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from chaosfm._config import ConfigError
    from chaosfm.pipelines import run_generate

    try:
        prompt = [int(part) for part in args.prompt.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--prompt: expected integer codes separated by spaces, got {args.prompt!r}") from None
    codes = run_generate(
        args.run_dir, prompt, args.n, temperature=args.temperature, top_k=args.top_k,
        num_samples=args.num_samples, seed=args.seed,
    )
    for row in codes:
        print(" ".join(str(int(c)) for c in row))


def cmd_forecast(args: argparse.Namespace) -> None:
    from chaosfm.pipelines import run_forecast

    table = run_forecast(
        args.run_dir, args.data, args.horizon, args.num_samples, args.out, asset=args.asset,
        context_length=args.context_length, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
    )
    console.print(_table(f"forecast of {table['asset'].iloc[0]} ({args.num_samples} samples)", table.head(20)))
    console.print(f"wrote {args.out}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from chaosfm._config import ConfigError, parse_config, read_config
    from chaosfm.tokenizers import TokenizeConfig, inspect_run, run_tokenize

    if args.action == "inspect":
        if not args.run_dir:
            raise ConfigError("usage: chaosfm tokenize inspect RUN_DIR")
        report = inspect_run(args.run_dir)
        console.print(_table(f"tokenizer health: {args.run_dir}", report["table"]))
        console.print(f"wrote {report['plot']}")
        return
    if args.action is not None:
        raise ConfigError(f"unknown tokenize action {args.action!r}; use: chaosfm tokenize inspect RUN_DIR")
    overrides: dict[str, Any] = {
        "data": _split(args.data),
        "tokenizer": args.tokenizer,
        "levels": _split(args.levels),
        "codebook": args.codebook,
        "patch": args.patch,
        "restarts": args.restarts,
        "bins": args.bins,
        "vocab_size": args.vocab_size,
        "steps": args.steps,
        "cutoff": args.cutoff,
        "seed": args.seed,
        "out": str(args.out) if args.out else None,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    if args.config is not None:
        config = read_config(TokenizeConfig, args.config, values)
    else:
        if not values.get("data"):
            raise ConfigError("--data is required (or --config FILE with a data key)")
        config = parse_config(TokenizeConfig, values, "flags")
    run_tokenize(config)
    report = inspect_run(config.out)
    console.print(_table(f"tokenizer health: {config.out}", report["table"]))
    console.print(f"wrote {config.out}/metrics.json, the tokenizer, and {report['plot']}")


def cmd_demo(args: argparse.Namespace) -> None:
    from chaosfm.pipelines import run_demo

    started = time.perf_counter()
    metrics = run_demo(args.out, fast=args.fast, models=not args.no_models)
    _summary_table(metrics)
    for name, entry in (metrics.get("code_models") or {}).items():
        heldout = entry.get("heldout") or {}
        console.print(
            f"{name}: held-out perplexity {_cell(heldout.get('perplexity'))} "
            f"(unigram {_cell(heldout.get('unigram_perplexity'))}) on {entry['dataset']} codes"
        )
    console.print(
        f"wrote {args.out}/metrics.json and {args.out}/report.html in "
        f"{time.perf_counter() - started:.0f} s"
    )


def cmd_stream(args: argparse.Namespace) -> int:
    import json

    from chaosfm._config import ConfigError, read_config
    from chaosfm.data import DataError, frame_kind, load
    from chaosfm.predictor import StreamConfig, run_stream

    overrides = {"column": args.column, "seed": args.seed}
    if args.on_bad_line:
        overrides["on_bad_line"] = args.on_bad_line
    elif args.data == "-":
        # A live feed keeps going past a bad line (reported at once, state kept); a file stops.
        overrides["on_bad_line"] = "skip"
    # Operations (issue 8): snapshots, warm start, determinism, metrics endpoint.
    overrides.update(snapshot=args.snapshot, snapshot_every=args.snapshot_every, restore=args.restore,
                     metrics_port=args.metrics_port, cache_dir=args.cache_dir,
                     deterministic=True if args.deterministic else None,
                     compilation_cache=False if args.no_compilation_cache else None,
                     warm_up=False if args.no_warm_up else None)
    if args.config is not None:
        config = read_config(StreamConfig, args.config, overrides)
    else:
        from chaosfm._config import parse_config

        config = parse_config(StreamConfig, {k: v for k, v in overrides.items() if v is not None}, "command line")
    out = args.out

    def report_bad(error: DataError) -> None:
        print(f"chaosfm: error: {error} (skipped; the predictor keeps its last good state)",
              file=sys.stderr, flush=True)

    def report_ready(info: dict[str, Any]) -> None:
        if info["metrics_url"]:
            print(f"chaosfm: serving Prometheus metrics on {info['metrics_url']}", file=sys.stderr, flush=True)

    if args.data == "-":
        def emit(row: dict[str, Any]) -> None:
            print(json.dumps(row, default=str), flush=True)

        metrics = run_stream(config, out, lines=sys.stdin, on_prediction=emit, on_bad_line=report_bad,
                             on_ready=report_ready)
    else:
        frame = load(args.data)
        column = config.column
        if args.column is None and column not in frame.columns and frame_kind(frame) == "trajectory":
            column = "x0"
            config = config.model_copy(update={"column": column})
        if column not in frame.columns:
            raise ConfigError(f"--column {column!r} is not in {args.data}; columns: {list(frame.columns)}")
        asset = args.asset or frame["asset"].iloc[0]
        part = frame[frame["asset"] == asset]
        if part.empty:
            raise ConfigError(f"--asset {asset!r} is not in {args.data}; assets: {sorted(frame['asset'].unique())}")
        if args.length:
            part = part.iloc[: args.length]
        metrics = run_stream(config, out, series=part[column].to_numpy(), timestamps=part["timestamp"].astype(str).tolist(),
                             on_bad_line=report_bad, on_ready=report_ready)
    # With --data - stdout carries one JSON prediction per line; keep the summary off it.
    target = Console(stderr=True, width=140) if args.data == "-" else console
    _stream_summary(target, metrics)
    target.print(f"ready in {_cell(metrics['startup_seconds'])} s, first step {_cell(metrics['first_step_ms'])} ms"
                 + (f"; snapshot {config.snapshot} ({metrics['snapshots_written']} writes)" if config.snapshot else ""))
    target.print(f"wrote {out}/predictions.csv, telemetry.csv, metrics.json and telemetry.png")
    return 0


def _stream_summary(target: Console, metrics: dict[str, Any]) -> None:
    import pandas as pd

    rows = [{"model": who, **metrics[who]} for who in ("predictor", "random_walk") if who in metrics]
    if rows:
        title = f"one-step-ahead scores over {metrics.get('scored_steps', 0)} steps"
        target.print(_table(title, pd.DataFrame(rows)))
    latency = metrics.get("latency_ms", {})
    flags = ", ".join(f"{k} {v}" for k, v in metrics.get("flags", {}).items())
    target.print(f"step latency p50 {_cell(latency.get('p50'))} ms, p99 {_cell(latency.get('p99'))} ms; flags: {flags}")


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chaosfm",
        description="Forecast chaotic and financial time series, and tell the truth about how well it did.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = commands.add_parser("datasets", help="list the built-in datasets")
    p.set_defaults(run=cmd_datasets)

    data = commands.add_parser("data", help="inspect and check data")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    p = data_commands.add_parser("check", help="validate a CSV/Parquet file or a built-in dataset")
    p.add_argument("path", help="file path or built-in name")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed and say what was done")
    p.set_defaults(run=cmd_data_check)

    p = commands.add_parser("evaluate", help="fit up to a cutoff and score under the leakage protocol")
    p.add_argument("--data", help="dataset names or paths, comma-separated")
    p.add_argument("--models", help="model names, comma-separated (default: every baseline that applies)")
    p.add_argument("--cutoff", help="last timestamp models may fit on (default: 70%% of the rows)")
    p.add_argument("--out", type=Path, help="run folder to write (default: runs/evaluate)")
    p.add_argument("--horizon", type=int, help="steps forecast from each origin")
    p.add_argument("--num-samples", type=int, help="sample paths per forecast")
    p.add_argument("--embargo", type=int, help="observations after training data that are not fresh")
    p.add_argument("--step", type=int, help="rows between forecast origins")
    p.add_argument("--context-length", type=int, help="rows of history given to each forecast")
    p.add_argument("--max-windows", type=int, help="score at most this many origins per asset")
    p.add_argument("--seed", type=int, help="seed of every random draw")
    p.add_argument("--config", type=Path, help="YAML config; flags override it")
    p.add_argument("--run", dest="run_dirs", type=Path, action="append",
                   help="run folder of `chaosfm train` to evaluate beside the baselines (repeatable)")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("tokenize", help="fit a tokenizer (fsq, vqvae, bins) and report its health")
    p.add_argument("action", nargs="?", help="'inspect' to re-read a run folder")
    p.add_argument("run_dir", nargs="?", help="with inspect: the run folder")
    p.add_argument("--data", help="dataset names or paths, comma-separated")
    p.add_argument("--tokenizer", choices=["fsq", "vqvae", "bins"], help="which tokenizer (default fsq)")
    p.add_argument("--levels", help="FSQ levels, e.g. 8,8,4,4")
    p.add_argument("--codebook", type=int, help="VQ-VAE codebook size")
    p.add_argument("--patch", type=int, help="candles per code (FSQ, VQ-VAE; default 1)")
    p.add_argument("--no-restarts", dest="restarts", action="store_false", default=None,
                   help="VQ-VAE: do not restart dead codes")
    p.add_argument("--bins", choices=["uniform", "quantile"], help="bin tokenizer kind (default uniform)")
    p.add_argument("--vocab-size", type=int, help="bin tokenizer codes, PAD and EOS included (default 4096)")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--cutoff", help="last timestamp fitting may see")
    p.add_argument("--seed", type=int, help="seed of every random draw")
    p.add_argument("--config", type=Path, help="YAML TokenizeConfig; flags override it")
    p.add_argument("--out", type=Path, help="run folder (default runs/tokenize)")
    p.set_defaults(run=cmd_tokenize)

    p = commands.add_parser("train", help="fit a tokenizer and train a GPT or Mamba on its codes")
    p.add_argument("--config", type=Path, required=True, help="YAML with data, tokenizer, model, train sections")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(run=cmd_train)

    _cli_training.add_stage_commands(commands)

    p = commands.add_parser("generate", help="sample codes from a trained run after a prompt")
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="run folder of `chaosfm train`")
    p.add_argument("--prompt", required=True, help='codes to continue, e.g. "80 81 83"')
    p.add_argument("-n", type=int, default=50, help="codes to generate (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely codes")
    p.add_argument("--num-samples", type=int, default=1, help="paths to sample, one per line")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("forecast", help="forecast after the last row of a dataset with a trained run")
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="run folder of `chaosfm train`")
    p.add_argument("--data", required=True, help="built-in name or CSV/Parquet path")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--num-samples", type=int, default=100, help="sample paths (default 100)")
    p.add_argument("--out", type=Path, required=True, help="CSV of the mean and quantiles per step")
    p.add_argument("--asset", help="asset of a multi-asset frame (default: the first)")
    p.add_argument("--context-length", type=int, help="rows of history to encode (default: all)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_forecast)

    p = commands.add_parser("stream", help="run the online stochastic predictor over a series or stdin")
    p.add_argument("--data", required=True, help="built-in name, CSV/Parquet path, or - for CSV lines on stdin")
    p.add_argument("--column", help="column to stream (default: close; x0 for trajectories)")
    p.add_argument("--asset", help="asset of a multi-asset frame (default: the first)")
    p.add_argument("--length", type=int, help="stream only the first N rows")
    p.add_argument("--config", type=Path, help="YAML StreamConfig; flags override it")
    p.add_argument("--seed", type=int, help="seed of every random draw")
    p.add_argument("--on-bad-line", choices=["raise", "skip"],
                   help="bad input: stop (default for files) or report and skip (default for stdin)")
    p.add_argument("--out", type=Path, required=True, help="folder for predictions, telemetry, metrics, plot")
    p.add_argument("--snapshot", type=Path, help="write the predictor state here (end of run, and every N steps)")
    p.add_argument("--snapshot-every", type=int, help="steps between snapshots (default: only at the end)")
    p.add_argument("--restore", type=Path, help="resume from this snapshot (same --config it was written with)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT (0: a free port)")
    p.add_argument("--cache-dir", type=Path, help="persistent compilation cache (default $CHAOSFM_CACHE_DIR or the user cache dir)")
    p.add_argument("--no-compilation-cache", action="store_true", help="do not use the persistent compilation cache")
    p.add_argument("--no-warm-up", action="store_true", help="skip the warm-up pass before the first observation")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible: highest matmul precision, pinned PRNG")
    p.set_defaults(run=cmd_stream)

    _cli_tune.add_commands(commands)
    _cli_training.add_multitask_command(commands)
    _cli_world.add_commands(commands)

    p = commands.add_parser(
        "demo", help="the main job: every baseline, a tiny GPT and Mamba (and, in full, JEPA+CFM) on sp500 and lorenz63"
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    p.add_argument("--fast", action="store_true", help="fewer windows, samples and steps: under 3 minutes on 2 cores")
    p.add_argument("--no-models", action="store_true", help="baselines only: skip training the code models")
    p.set_defaults(run=cmd_demo)
    return parser


def _is_bad_input(error: BaseException) -> bool:
    from chaosfm._artifacts import ArtifactError
    from chaosfm._config import ConfigError
    from chaosfm.data import DataError

    return isinstance(
        error,
        (UsageError, DataError, ConfigError, ArtifactError, FileNotFoundError, IsADirectoryError,
         PermissionError),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chaosfm`` console script; returns the exit code."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args_list
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
        if not hasattr(args, "run"):
            (parser if args.command is None else parser._subparsers._group_actions[0].choices[args.command]).print_help()
            return 0 if args.command is None and not args_list else 2
        args.run(args)
    except KeyboardInterrupt:
        print("chaosfm: interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into exit codes
        bad_input = _is_bad_input(error)
        if debug:
            traceback.print_exc()
        kind = "error" if bad_input else f"internal error ({type(error).__name__}; rerun with --debug for the trace)"
        print(f"chaosfm: {kind}: {error}", file=sys.stderr)
        return 2 if bad_input else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
