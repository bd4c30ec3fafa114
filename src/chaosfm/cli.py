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
from rich.table import Table

# Tables are wider than 80 columns; when output goes to a file or pipe, do not squeeze them.
console = Console(width=None if sys.stdout.isatty() else 140)


class UsageError(Exception):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2 itself
        raise UsageError(f"{self.prog}: {message}")


def _table(title: str, frame: Any) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    return str(value)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


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


def cmd_stage(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.train import read_stage, run_stage

    overrides = {
        "stage": args.stage,
        "parent": str(args.parent) if args.parent else None,
        "data.names": _split(args.data),
        "data.cutoff": args.cutoff,
        "data.embargo": args.embargo,
        "train.learning_rate": args.lr,
        "train.steps": args.steps,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
        "epochs": args.epochs,
        "context_len": args.context_len,
        "horizon": args.horizon,
        "reward": args.reward,
        "kl_coef": args.kl_coef,
        "samples": args.samples,
    }
    config = read_stage(args.config, overrides)
    metrics = run_stage(config, args.out, resume=args.resume).metrics
    heldout = metrics.get("heldout") or {}
    row = {
        "stage": config.stage,
        "steps": metrics.get("steps"),
        "final train loss": metrics.get("final_train_loss"),
        "held-out perplexity": heldout.get("perplexity"),
        "unigram perplexity": heldout.get("unigram_perplexity"),
        "accuracy": heldout.get("accuracy"),
        "top-5": heldout.get("top5_accuracy"),
    }
    if "reward" in metrics:
        row.update({"reward first": metrics["reward"]["first"], "reward last": metrics["reward"]["last"]})
    console.print(_table(f"{config.stage}: next-code scores on held-out codes", pd.DataFrame([row])))
    console.print(f"wrote the {config.stage} run to {args.out}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.pipelines import paired_table, read_pipeline_config, run_pipeline

    started = time.perf_counter()
    metrics = run_pipeline(read_pipeline_config(args.config), args.out)
    title = f"{metrics['dataset']}: every stage on the same {metrics['windows']['common_fresh']} fresh windows"
    console.print(_table(title, pd.DataFrame(metrics["table"])))
    confidence = metrics["protocol"]["confidence"]
    paired = paired_table(metrics["paired_vs_pretrain"], confidence)
    console.print(_table("paired differences to pretrain, same windows", paired))
    console.print(
        f"wrote {args.out}/metrics.json, comparison.csv and comparison.md in {time.perf_counter() - started:.0f} s"
    )


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


def cmd_multitask(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm._config import parse_config, read_config
    from chaosfm.evaluate import multitask_table, run_multitask
    from chaosfm.train import MultitaskRunConfig, TrainConfig

    top = {
        key: getattr(args, key)
        for key in ("data", "horizon", "threshold", "vol_horizon", "cutoff", "val_fraction", "embargo",
                    "segment_length", "burn_in")
        if getattr(args, key) is not None
    }
    top["out"] = str(args.out)
    loop = {key: getattr(args, key) for key in ("steps", "seed") if getattr(args, key) is not None}
    if args.config is not None:
        config = read_config(MultitaskRunConfig, args.config, top)
    else:
        config = parse_config(MultitaskRunConfig, top, "flags")
    if loop:
        train = parse_config(TrainConfig, {**config.train.model_dump(), **loop}, "flags")
        config = config.model_copy(update={"train": train})
    started = time.perf_counter()
    metrics = run_multitask(config, args.out, resume=args.resume)
    title = (f"{config.data}: {config.horizon}-day direction (±{config.threshold:g}), p10-p90 interval and "
             f"{config.vol_horizon}-day vol, cutoff {config.cutoff}")
    console.print(_table(title, multitask_table(metrics)))
    for name, entry in metrics["classes"].items():
        if entry.get("confusion"):
            frame = pd.DataFrame(entry["confusion"], columns=["pred down", "pred flat", "pred up"])
            frame.insert(0, "true", ["down", "flat", "up"])
            console.print(_table(f"{name}: confusion of the direction head", frame))
    fresh = metrics["classes"]["fresh"]
    console.print(
        f"fresh: \\[p10, p90] coverage {_cell(fresh.get('coverage_80'))} over {fresh['n_windows']} windows "
        f"({fresh['n_nonoverlapping']} non-overlapping); nominal 0.8"
    )
    console.print(f"wrote {args.out}/metrics.json, table.csv, predictions.csv and the model in "
                  f"{time.perf_counter() - started:.0f} s")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from chaosfm._config import read_config
    from chaosfm.train import PretrainConfig, run_pretrain

    config = read_config(PretrainConfig, args.config)
    result = run_pretrain(config, args.out, resume=args.resume)
    heldout = result.metrics.get("heldout") or {}
    target = _cell(result.metrics["variance_target_std"])
    console.print(
        f"{result.metrics['model']}: {result.metrics['params']:,} parameters, {result.step} steps; held-out "
        f"embeddings of {heldout.get('windows', 0)} windows against the VICReg target std {target}:"
    )
    if "collapsed" in heldout:
        verdict = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"  # noqa: E731
        console.print(f"  not collapsed (mean std {_cell(heldout['std_mean'])} >= {target}): "
                      f"{verdict(not heldout['collapsed'])}")
        console.print(f"  every dimension above the target (min std {_cell(heldout['std_min'])}, "
                      f"{heldout['dims_below_target']} below): {verdict(heldout['all_dims_above_target'])}")
    else:
        console.print(f"  {heldout.get('note', 'no held-out check')}")
    console.print(f"wrote the run to {args.out}")


def cmd_mvx(args: argparse.Namespace) -> None:
    from chaosfm._config import parse_config
    from chaosfm.agents import MvxConfig, run_mvx

    values = {k: getattr(args, k) for k in ("data", "out", "universes", "samples", "steps", "scale",
                                             "every", "max_origins", "seed") if getattr(args, k) is not None}
    values["run"] = args.run_dir
    summary = run_mvx(parse_config(MvxConfig, values, "flags"))
    import pandas as pd

    rows = [{"score": k, **v} for k, v in summary["scores"].items()]
    console.print(_table(f"Multiverse Crossing over {summary['origins']} origins of {args.data}", pd.DataFrame(rows)))
    console.print(f"wrote {args.out}/scores.csv, mvx.png and metrics.json")


def cmd_leakage(args: argparse.Namespace) -> None:
    from chaosfm._config import ConfigError, parse_config, read_config
    from chaosfm.evaluate import LeakageConfig, leakage_tables, run_leakage

    overrides: dict[str, Any] = {
        "data": _split(args.data), "pretrain_cutoff": args.pretrain_cutoff, "fresh_start": args.fresh_start,
        "models": _split(args.models), "cfm_weight": args.cfm_weight, "max_windows": args.max_windows,
        "seed": args.seed, "horizon": args.horizon, "out": str(args.out) if args.out else None,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    if args.config is not None:
        config = read_config(LeakageConfig, args.config, values)
    else:
        if not values.get("data"):
            raise ConfigError("--data is required (or --config FILE with a data key)")
        config = parse_config(LeakageConfig, values, "flags")
    if args.steps is not None:  # train.steps only: the rest of the train section stays
        train = {**config.train.model_dump(), "steps": args.steps}
        config = parse_config(LeakageConfig, {**config.model_dump(mode="json"), "train": train}, "flags")
    metrics = run_leakage(config)
    for title, table in leakage_tables(metrics).items():
        console.print(_table(title, table))
    console.print(f"wrote {config.out}/metrics.json and report.md in {metrics['wall_time_s']:.0f} s")


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

    p = commands.add_parser("stage", help="one training stage (pretrain, midtrain, sft, rl) from its parent's run")
    p.add_argument("stage", choices=["pretrain", "midtrain", "sft", "rl"], help="which stage")
    p.add_argument("--in", dest="parent", type=Path, help="run folder of the previous stage (pretrain: optional)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--config", type=Path, help="YAML StageConfig; flags override it")
    p.add_argument("--data", help="dataset names or paths, comma-separated (default: the parent's)")
    p.add_argument("--cutoff", help="last timestamp the stage may train on (default: the parent's)")
    p.add_argument("--embargo", type=int, help="rows after the cutoff left out of the held-out codes")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the parent's times 1, 0.1, 0.5, 0.1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer updates")
    length.add_argument("--epochs", type=float, help="passes over the training windows (sets the steps)")
    p.add_argument("--batch-size", type=int, help="windows per update")
    p.add_argument("--context-len", type=int, help="sft/rl: context codes (default: model context - horizon)")
    p.add_argument("--horizon", type=int, help="sft/rl: codes predicted after each context (default 5)")
    p.add_argument("--reward", choices=["token_accuracy", "return_mse"], help="rl: the reward (default token_accuracy)")
    p.add_argument("--kl-coef", type=float, help="rl: weight of KL(policy || sft model) (default 0.05)")
    p.add_argument("--samples", type=int, help="rl: horizons sampled per context (default 8)")
    p.add_argument("--seed", type=int, help="seed of the stage's loop")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(run=cmd_stage)

    p = commands.add_parser("pipeline", help="pretrain, midtrain, sft and rl in turn, compared on the same fresh windows")
    p.add_argument("--config", type=Path, required=True, help="YAML: data, pretrain, midtrain, sft, rl, evaluate")
    p.add_argument("--out", type=Path, required=True, help="folder for the stage runs and the comparison")
    p.set_defaults(run=cmd_pipeline)

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

    p = commands.add_parser("multitask", help="train and score the long-horizon multitask head (direction, quantiles, vol)")
    p.add_argument("--data", help="built-in name or CSV/Parquet path of market data (default sp500)")
    p.add_argument("--horizon", type=int, help="H: days ahead of the forward log return (default 90)")
    p.add_argument("--threshold", type=float, help="direction is up/down beyond ±threshold (default 0.05)")
    p.add_argument("--vol-horizon", type=int, help="days of the forward realized volatility (default 30)")
    p.add_argument("--cutoff", help="last timestamp anything may fit on (default: 80%% of the rows)")
    p.add_argument("--val-fraction", type=float, help="share of the pre-cutoff rows kept for validation")
    p.add_argument("--embargo", type=int, help="rows after each split boundary where no label may start")
    p.add_argument("--segment-length", type=int, help="rows per truncated-BPTT segment")
    p.add_argument("--burn-in", type=int, help="first rows of a training window that only warm the state")
    p.add_argument("--steps", type=int, help="optimizer updates (train.steps)")
    p.add_argument("--seed", type=int, help="seed of every random draw (train.seed)")
    p.add_argument("--config", type=Path, help="YAML MultitaskRunConfig; flags override it")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.set_defaults(run=cmd_multitask)

    p = commands.add_parser("pretrain", help="self-supervised JEPA pretraining (VICReg, EMA target, CFM head)")
    p.add_argument("--config", type=Path, required=True, help="YAML with data, model, train sections")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.set_defaults(run=cmd_pretrain)

    p = commands.add_parser("mvx", help="Multiverse Crossing scores over time from a pretrained JEPA+CFM")
    p.add_argument("--run", dest="run_dir", type=Path, required=True,
                   help="run folder of `chaosfm pretrain` (with cfm_weight > 0)")
    p.add_argument("--data", required=True, help="built-in name or CSV/Parquet path")
    p.add_argument("--out", type=Path, required=True, help="folder for scores.csv, mvx.png, metrics.json")
    p.add_argument("--universes", type=int, help="perturbed copies of each context embedding (default 8)")
    p.add_argument("--samples", type=int, help="flow samples per universe (default 16)")
    p.add_argument("--steps", type=int, help="rollout steps for the Lyapunov proxy (default 3)")
    p.add_argument("--scale", type=float, help="std of the tangent-plane perturbation (default 0.05)")
    p.add_argument("--every", type=int, help="rows between scored origins (default 5)")
    p.add_argument("--max-origins", type=int, help="most recent origins scored per asset (default 400)")
    p.add_argument("--seed", type=int)
    p.set_defaults(run=cmd_mvx)

    p = commands.add_parser(
        "leakage",
        help="pretrain encoders leaky and fenced, score heads in-domain, within-pretrain and fresh",
        description=(
            "Built-in data cover different years: sp500 and nasdaq 1999-2018, ndx and n225 1990-2001. "
            "Give one date for all datasets or one per dataset (sp500=2010-12-31,ndx=1996-12-31); "
            "left out, the cutoff falls at 50% and the fresh start at 75% of each dataset's rows."
        ),
    )
    p.add_argument("--data", help="market datasets, comma-separated, e.g. sp500,nasdaq,ndx,n225")
    p.add_argument("--pretrain-cutoff", help="DATE or NAME=DATE,...: fenced encoders and all heads fit up to here")
    p.add_argument("--fresh-start", help="DATE or NAME=DATE,...: leaky encoders see rows before it; fresh after")
    p.add_argument("--models", help="jepa,jepa_cfm (default both)")
    p.add_argument("--cfm-weight", type=float, help="share of the flow-matching loss in jepa_cfm (default 1)")
    p.add_argument("--steps", type=int, help="pretraining steps per encoder (train.steps, default 300)")
    p.add_argument("--horizon", type=int, help="forecast and probe horizon in rows (default 5)")
    p.add_argument("--max-windows", type=int, help="scored origins per dataset (default 150)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", type=Path, help="YAML LeakageConfig; flags override it")
    p.add_argument("--out", type=Path, help="study folder (default runs/leakage)")
    p.set_defaults(run=cmd_leakage)

    p = commands.add_parser(
        "demo", help="the main job: every baseline and a tiny GPT and Mamba on sp500 and lorenz63"
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
