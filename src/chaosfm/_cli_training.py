"""``chaosfm stage``, ``pipeline`` and ``multitask``: the training recipes of issue 7."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from chaosfm._cli_common import _cell, _split, _table, console


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


def add_stage_commands(commands: Any) -> None:
    """Add ``stage`` and ``pipeline`` to the ``commands`` subparsers."""
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


def add_multitask_command(commands: Any) -> None:
    """Add ``multitask`` to the ``commands`` subparsers."""
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
