"""``chaosfm pretrain``, ``mvx`` and ``leakage``: the self-supervised world model and its leakage study."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from chaosfm.cli._output import cell, say, show
from chaosfm.cli._parser import UsageError, common, overrides, split


def _reads(metrics: dict[str, Any]) -> str:
    if metrics.get("input") == "codes":
        return f"candle codes ({metrics['vocab_size']:,} in the tokenizer's vocabulary)"
    from chaosfm.train import CLOSE_FEATURES

    if tuple(metrics.get("features") or ()) == CLOSE_FEATURES:
        return f"close-only features ({', '.join(CLOSE_FEATURES)})"
    return "candle features"


def cmd_pretrain(args: argparse.Namespace) -> None:
    from chaosfm.jobs import pretrain

    values = overrides(args, pretrain.FLAGS, ("cutoff", "seed", "out", "resume"))
    if args.data:
        values["data.names"] = split(args.data)
    config = pretrain.read(args.config, values)
    metrics = pretrain.run(config)
    heldout = metrics.get("heldout") or {}
    target = cell(metrics["variance_target_std"])
    say(
        f"{metrics['model']} over {_reads(metrics)}: {metrics['params']:,} parameters, "
        f"{metrics['steps']} steps; held-out "
        f"embeddings of {heldout.get('windows', 0)} windows against the VICReg target std {target}:"
    )
    if "collapsed" in heldout:
        verdict = lambda ok: ("yes", "green") if ok else ("no", "red")  # noqa: E731
        say(f"  not collapsed (mean std {cell(heldout['std_mean'])} >= {target}): ", verdict(not heldout['collapsed']))
        say(f"  every dimension above the target (min std {cell(heldout['std_min'])}, "
            f"{heldout['dims_below_target']} below): ", verdict(heldout['all_dims_above_target']))
    else:
        say(f"  {heldout.get('note', 'no held-out check')}")
    say(f"wrote the run to {config.out}")


def cmd_mvx(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm._config import read_config
    from chaosfm.jobs import mvx

    values = overrides(args, mvx.FLAGS, ("run_dir", "data", "out", "universes", "num_samples", "rollout_steps", "scale",
                                         "every", "max_windows", "seed"))
    config = read_config(mvx.MvxConfig, None, values)
    summary = mvx.run(config)
    rows = [{"score": k, **v} for k, v in summary["scores"].items()]
    show(f"Multiverse Crossing over {summary['origins']} origins of {args.data}", pd.DataFrame(rows))
    say(f"wrote {config.out}/scores.csv, mvx.png and metrics.json")


def cmd_leakage(args: argparse.Namespace) -> None:
    from chaosfm._config import read_config
    from chaosfm.jobs import leakage

    if args.config is None and not args.data:
        raise UsageError("chaosfm leakage: --data is required (or --config FILE with a data key)")
    values = overrides(args, leakage.FLAGS, ("cutoff", "fresh_start", "cfm_weight", "max_windows", "seed", "horizon",
                                             "out", "steps", "tokenizer", "tokenizer_steps", "agent"))
    for name in ("data", "models", "sizes", "cfm_weights"):
        if getattr(args, name):
            values[name] = split(getattr(args, name))
    if args.fast:
        values["fast"] = True
    config = read_config(leakage.LeakageConfig, args.config, values)
    started = time.perf_counter()
    metrics = leakage.run(config)
    for title, frame in leakage.leakage_tables(metrics).items():
        show(title, frame)
    written = "capacity.md, capacity.csv and capacity.png" if "cells" in metrics else "report.md"
    say(f"wrote {config.out}/metrics.json and {written} in {time.perf_counter() - started:.0f} s")


def add(commands: Any) -> None:
    p = commands.add_parser("pretrain", help="self-supervised JEPA pretraining (VICReg, EMA target, CFM head)",
                            parents=common("config", "out", "resume", "data", "cutoff", "seed", "set",
                                           required=("config",)))
    p.set_defaults(run=cmd_pretrain)

    p = commands.add_parser("mvx", help="Multiverse Crossing scores over time from a pretrained JEPA+CFM",
                            parents=common("data", "out", "seed", "set", required=("data",)))
    p.add_argument("--run", dest="run_dir", type=Path, required=True,
                   help="run folder of `chaosfm pretrain` (with cfm_weight > 0)")
    p.add_argument("--universes", type=int, help="perturbed copies of each context embedding (default 8)")
    p.add_argument("--num-samples", type=int, help="flow samples per universe (default: 16)")
    p.add_argument("--rollout-steps", type=int,
                   help="rollout steps for the Lyapunov proxy, each cfm_horizon candles (default: 3)")
    p.add_argument("--scale", type=float, help="std of the tangent-plane perturbation (default 0.05)")
    p.add_argument("--every", type=int, help="rows between scored origins (default 5)")
    p.add_argument("--max-windows", type=int, help="most recent origins scored per asset (default: 400)")
    p.set_defaults(run=cmd_mvx)

    p = commands.add_parser(
        "leakage",
        help="pretrain encoders leaky and fenced, score heads in-domain, within-pretrain and fresh",
        description=(
            "Built-in data cover different years: sp500 and nasdaq 1999-2018, ndx and n225 1990-2001. "
            "Give one date for all datasets or one per dataset (sp500=2010-12-31,ndx=1996-12-31); "
            "left out, the cutoff falls at 50% and the fresh start at 75% of each dataset's rows."
        ),
        parents=common("data", "seed", "out", "config", "set"),
    )
    p.add_argument("--cutoff", dest="cutoff",
                   help="DATE or NAME=DATE,...: fenced encoders and all heads fit up to here (pretrain_cutoff; "
                        "default: 50%% of each dataset's rows)")
    p.add_argument("--fresh-start", help="DATE or NAME=DATE,...: leaky encoders see rows before it; fresh after "
                                                   "(default: 75%% of each dataset's rows)")
    p.add_argument("--models", help="jepa,jepa_cfm (default: both)")
    p.add_argument("--cfm-weight", type=float, help="share of the flow-matching loss in jepa_cfm (default 1)")
    p.add_argument("--steps", type=int, help="pretraining optimizer updates per encoder (train.steps; default: 300)")
    p.add_argument("--tokenizer", choices=["fsq", "vqvae"],
                   help="encoders read this candle tokenizer's codes (tokenizer.kind; default: candle features)")
    p.add_argument("--tokenizer-steps", type=int, help="optimizer updates of each tokenizer fit (tokenizer.steps; default: 2000)")
    p.add_argument("--horizon", type=int, help="forecast and probe horizon in rows (default 5)")
    p.add_argument("--max-windows", type=int, help="scored origins per dataset (default 150)")
    p.add_argument("--agent", nargs="?", const="qrdqn", default=None, metavar="{qrdqn,tdmpc2}",
                   help="score this cross-sectional agent (Sharpe) on each encoder instead of the forecasting heads; "
                        "bare --agent: qrdqn (agent; its settings: agent_options; default: off, the heads)")
    p.add_argument("--sizes", help="capacity study: encoder sizes nano,tiny,small,medium; one leakage study per "
                                   "(size, cfm weight) cell (default: off, one study)")
    p.add_argument("--cfm-weights", help="capacity study: flow-matching weights, e.g. 0,0.5,1,2; 0 is no flow head (default: "
                                         "--cfm-weight alone, with --sizes)")
    p.add_argument("--fast", action="store_true",
                   help="capacity study on the fast grid: nano,tiny x 0,1, three steps per encoder (default: off)")
    p.set_defaults(run=cmd_leakage)
