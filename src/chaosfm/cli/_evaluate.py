"""``chaosfm evaluate`` and ``chaosfm demo``."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from chaosfm.cli._output import cell, say, show
from chaosfm.cli._parser import UsageError, common, overrides, split


def summary_table(metrics: dict[str, Any]) -> None:
    """Per dataset, the scores of every model on the fresh windows they all scored."""
    import pandas as pd

    from chaosfm.report import compared_heading, windows_differ

    shown = ("crps", "mase", "coverage_80", "coverage_50", "valid_prediction_time", "smape", "directional_accuracy")
    for name, entry in metrics["datasets"].items():
        fresh = entry["compared"]["fresh"]
        rows = []
        paired = entry.get("paired", {}).get("fresh", {})
        headline = next((k for k in shown if k in next(iter(fresh["models"].values()), {})), None)
        for model, means in fresh["models"].items():
            row = {"model": model, "fresh windows": fresh["windows"][model]}
            row.update({k: v for k, v in means.items() if k in shown})
            if paired.get("models") and headline is not None:
                difference = paired["models"].get(model, {}).get(headline)
                row[f"{headline} - {paired['reference']}"] = (
                    "reference" if model == paired["reference"] else
                    f"{cell(difference['value'])} [{cell(difference['ci_low'])}, {cell(difference['ci_high'])}]"
                    if difference and difference["value"] is not None else "-"
                )
            rows.append(row)
        cutoff = entry["cutoff"]
        if isinstance(cutoff, dict):
            cutoff = ", ".join(f"{a} {c}" for a, c in cutoff.items()) if len(set(cutoff.values())) > 1 else next(
                iter(cutoff.values()))
        heading = compared_heading(fresh)
        show(f"{name}: scores on fresh windows, {heading} (cutoff {cutoff})", pd.DataFrame(rows))
        differ = windows_differ(fresh)
        if differ:
            say(differ)
        channels = {k: {m: means.get(k) for m, means in fresh["models"].items()}
                    for k in next(iter(fresh["models"].values())) if k.startswith("vpt_")}
        if any(v is not None for per_model in channels.values() for v in per_model.values()):
            table = pd.DataFrame([{"channel": k.removeprefix("vpt_"), **v} for k, v in channels.items()])
            show(f"{name}: VPT of each channel alone, fresh windows, {heading}", table)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from chaosfm.jobs import evaluate

    if args.config is None and not args.data:
        raise UsageError("chaosfm evaluate: --data is required (or --config FILE with a datasets key)")
    values = overrides(args, evaluate.FLAGS, ("horizon", "num_samples", "embargo", "every", "max_windows", "seed",
                                              "context_length", "cutoff", "out", "lyapunov", "dt", "x64"))
    names = split(args.data)
    if names:
        values["datasets"] = [{"name": n} for n in names]
    if args.models:
        values["models"] = split(args.models)
    if args.run_dirs:
        values["runs"] = [str(run) for run in args.run_dirs]
    if args.calibrate:
        values["calibrate"] = split(args.calibrate)
    if args.reference:
        values["reference"] = args.reference
    if args.skip_in_sample:
        values["protocol.score_in_sample"] = False
    config = evaluate.read(args.config, values)
    metrics = evaluate.run(config)
    summary_table(metrics)
    say(f"wrote {config.out}/metrics.json and {config.out}/report.html")


def positive(text: str) -> float:
    """A flag value that must be a positive, finite number (an exponent, a time step)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number; got {text!r}")
    return value


def cmd_demo(args: argparse.Namespace) -> None:
    from chaosfm.jobs import demo

    from chaosfm._config import read_config

    started = time.perf_counter()
    values = overrides(args, {}, ("out",))
    if args.fast:
        values["fast"] = True
    if args.no_models:
        values["models"] = False
    config = read_config(demo.DemoConfig, None, values)
    metrics = demo.run(config)
    summary_table(metrics)
    for name, entry in (metrics.get("code_models") or {}).items():
        heldout = entry.get("heldout") or {}
        say(
            f"{name}: held-out perplexity {cell(heldout.get('perplexity'))} "
            f"(unigram {cell(heldout.get('unigram_perplexity'))}) on {entry['dataset']} codes"
        )
    say(f"wrote {config.out}/metrics.json and {config.out}/report.html in {time.perf_counter() - started:.0f} s")


def add(commands: Any) -> None:
    p = commands.add_parser("evaluate", help="fit up to a cutoff and score under the leakage protocol",
                            parents=common("data", "cutoff", "seed", "out", "config", "set", "x64"))
    p.add_argument("--models", help="model names, comma-separated (default: every baseline that applies)")
    p.add_argument("--horizon", type=int, help="rows (steps) forecast from each origin (default: 5)")
    p.add_argument("--num-samples", type=int, help="sample paths per forecast (default: 100)")
    p.add_argument("--embargo", type=int, help="rows after a model's training data that are not fresh (default: 5)")
    p.add_argument("--every", type=int, help="rows between forecast origins (default: the horizon)")
    p.add_argument("--context-length", type=int, help="rows of history given to each forecast (default: 512)")
    p.add_argument("--max-windows", type=int, help="score at most this many origins per asset, evenly spaced "
                                                    "(default: every origin)")
    p.add_argument("--lyapunov", type=positive, metavar="LAMBDA",
                   help="largest Lyapunov exponent per unit time, for valid prediction time (default: the "
                        "data's: a built-in system's, or NAME.json beside a file)")
    p.add_argument("--dt", type=positive,
                   help="time per row, in the exponent's time unit (default: the data's, else the spacing of "
                        "evenly spaced numeric timestamps)")
    p.add_argument("--run", dest="run_dirs", type=Path, action="append",
                   help="run folder of `chaosfm train`, `stage` or `pretrain` to evaluate beside the baselines "
                        "(repeatable; default: baselines only)")
    p.add_argument("--calibrate", metavar="METHODS",
                   help="also score a conformally calibrated copy of every model, named MODEL+METHOD: split, aci "
                        "(adaptive conformal inference), agaci (aggregated over step sizes); comma-separated "
                        "(default: none)")
    p.add_argument("--skip-in-sample", action="store_true",
                   help="do not score the windows a model trained on (config: protocol.score_in_sample: false)")
    p.add_argument("--reference", metavar="MODEL",
                   help="compare every model with this one, window for window, with a bootstrap interval "
                        "(default: garch on market data, context_parroting on trajectories, when scored)")
    p.set_defaults(run=cmd_evaluate)


def add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo", help="the main job: every baseline, a tiny GPT and Mamba (and, in full, JEPA+CFM) on sp500 and lorenz63",
        parents=common("out", "set"),
    )
    p.add_argument("--fast", action="store_true", help="fewer windows, samples and steps: under 3 minutes on 2 cores")
    p.add_argument("--no-models", action="store_true", help="baselines only: skip training the code models")
    p.set_defaults(run=cmd_demo)
