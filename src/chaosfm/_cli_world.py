"""``chaosfm pretrain``, ``mvx`` and ``leakage``: the self-supervised world model and its leakage study."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from chaosfm._cli_common import _cell, _split, _table, console


def _reads(metrics: dict[str, Any]) -> str:
    if metrics.get("input") == "codes":
        return f"candle codes ({metrics['vocab_size']:,} in the tokenizer's vocabulary)"
    return "candle features"


def cmd_pretrain(args: argparse.Namespace) -> None:
    from chaosfm._config import read_config
    from chaosfm.train import PretrainConfig, run_pretrain

    config = read_config(PretrainConfig, args.config)
    result = run_pretrain(config, args.out, resume=args.resume)
    heldout = result.metrics.get("heldout") or {}
    target = _cell(result.metrics["variance_target_std"])
    console.print(
        f"{result.metrics['model']} over {_reads(result.metrics)}: {result.metrics['params']:,} parameters, "
        f"{result.step} steps; held-out "
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
    if args.tokenizer is not None or args.tokenizer_steps is not None:  # tokenizer.kind / tokenizer.steps
        tokenizer = config.tokenizer.model_dump(mode="json") if config.tokenizer is not None else {}
        if args.tokenizer is not None:
            tokenizer.update(kind=args.tokenizer, path=None)
        if args.tokenizer_steps is not None:
            tokenizer["steps"] = args.tokenizer_steps
        config = parse_config(LeakageConfig, {**config.model_dump(mode="json"), "tokenizer": tokenizer}, "flags")
    metrics = run_leakage(config)
    for title, table in leakage_tables(metrics).items():
        console.print(_table(title, table))
    console.print(f"wrote {config.out}/metrics.json and report.md in {metrics['wall_time_s']:.0f} s")


def add_commands(commands: Any) -> None:
    """Add ``pretrain``, ``mvx`` and ``leakage`` to the ``commands`` subparsers."""
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
    p.add_argument("--tokenizer", choices=["fsq", "vqvae"],
                   help="encoders read this candle tokenizer's codes (tokenizer.kind; default: candle features)")
    p.add_argument("--tokenizer-steps", type=int, help="optimiser steps of each tokenizer fit (tokenizer.steps)")
    p.add_argument("--horizon", type=int, help="forecast and probe horizon in rows (default 5)")
    p.add_argument("--max-windows", type=int, help="scored origins per dataset (default 150)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", type=Path, help="YAML LeakageConfig; flags override it")
    p.add_argument("--out", type=Path, help="study folder (default runs/leakage)")
    p.set_defaults(run=cmd_leakage)
