"""``chaosfm train``, ``stage``, ``pipeline``, ``generate`` and ``forecast``: code models."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from chaosfm.cli._output import cell, say, show
from chaosfm.cli._parser import common, overrides, split


def cmd_train(args: argparse.Namespace) -> None:
    from chaosfm.jobs import train

    values = overrides(args, train.FLAGS, ("cutoff", "seed", "out", "resume", "coordinator", "num_processes",
                                           "process_id", "shards"))
    if args.data:
        values["data.names"] = split(args.data)
    config = train.read(args.config, values)
    metrics = train.run(config)
    heldout = metrics.get("heldout") or {}
    if heldout:
        say(
            f"held-out perplexity {cell(heldout.get('perplexity'))} (unigram "
            f"{cell(heldout.get('unigram_perplexity'))}), accuracy {cell(heldout.get('accuracy'))}, "
            f"top-5 {cell(heldout.get('top5_accuracy'))} over {heldout.get('tokens')} codes"
        )
    say(f"wrote the run to {config.out}")


def cmd_stage(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.jobs import stage

    values = overrides(args, stage.FLAGS, ("stage", "parent", "cutoff", "embargo", "lr", "steps", "batch_size", "seed",
                                           "epochs", "context_length", "horizon", "reward", "kl_coef", "num_samples", "out",
                                           "resume"))
    if args.data:
        values["data.names"] = split(args.data)
    config = stage.read(args.config, values)
    metrics = stage.run(config)
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
    show(f"{config.stage}: next-code scores on held-out codes", pd.DataFrame([row]))
    say(f"wrote the {config.stage} run to {config.out}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.jobs import pipeline

    started = time.perf_counter()
    config = pipeline.read(args.config, overrides(args, pipeline.FLAGS, ("seed", "out")))
    metrics = pipeline.run(config)
    title = f"{metrics['dataset']}: every stage on the same {metrics['windows']['common_fresh']} fresh windows"
    show(title, pd.DataFrame(metrics["table"]))
    confidence = metrics["protocol"]["confidence"]
    show("paired differences to pretrain, same windows", pipeline.paired_table(metrics["paired_vs_pretrain"], confidence))
    say(f"wrote {config.out}/metrics.json, comparison.csv and comparison.md in {time.perf_counter() - started:.0f} s")


def cmd_generate(args: argparse.Namespace) -> None:
    from chaosfm._config import read_config
    from chaosfm.jobs import forecast

    values = overrides(args, forecast.FLAGS, ("run_dir", "prompt", "n", "temperature", "top_k", "num_samples", "seed"))
    codes = forecast.generate(read_config(forecast.GenerateConfig, None, values))
    for row in codes:
        print(" ".join(str(int(c)) for c in row))


def cmd_forecast(args: argparse.Namespace) -> None:
    from chaosfm._config import read_config
    from chaosfm.jobs import forecast

    values = overrides(args, forecast.FLAGS, ("model", "run_dir", "data", "horizon", "num_samples", "out", "asset",
                                              "context_length", "quantiles", "temperature", "top_k", "seed"))
    config = read_config(forecast.ForecastConfig, None, values)
    table = forecast.run(config)
    assets = ", ".join(dict.fromkeys(table["asset"]))
    show(f"{table.attrs.get('model', 'forecast')}: forecast of {assets} ({config.num_samples} samples)", table.head(20))
    say(f"wrote {config.out}")


def add_train(commands: Any) -> None:
    p = commands.add_parser("train", help="fit a tokenizer and train a GPT or Mamba on its codes",
                            parents=common("config", "out", "resume", "data", "cutoff", "seed", "set",
                                           required=("config",), helps={"out": (
                                               "where to write: the run folder, a path or an fsspec URL (memory://, "
                                               "s3://...: trained in $CHAOSFM_WORK_DIR, copied there at each "
                                               "checkpoint) (default: runs/train-YYYYmmdd-HHMMSS)")}))
    p.add_argument("--shards", metavar="DIR", help="train from the windows of a chaosfm shard folder, read through "
                                                   "Grain, instead of loading --data (default: none, in memory)")
    several = p.add_argument_group("several processes (JAX's multi-controller runtime; all unset: one process)")
    several.add_argument("--coordinator", metavar="HOST:PORT",
                         help="process 0's coordinator address, the same for every process; auto: detect the "
                              "cluster (SLURM, Open MPI, Cloud TPU) (default: one process)")
    several.add_argument("--num-processes", type=int, metavar="N", help="processes in the run (default: 1)")
    several.add_argument("--process-id", type=int, metavar="I", help="this process's rank, 0 .. N-1 (default: 0)")
    p.set_defaults(run=cmd_train)


def add_stages(commands: Any) -> None:
    group = commands.add_parser("stage", help="one training stage (pretrain, midtrain, sft, rl) from its parent's run")
    stages = group.add_subparsers(dest="stage", metavar="STAGE", parser_class=type(group))
    learning_rates = {"pretrain": "the parent's, else the preset's", "midtrain": "0.1x the parent's", "sft": "0.5x the parent's",
                      "rl": "0.1x the parent's"}
    for name, what in (("pretrain", "next-code pretraining on codes up to the cutoff"),
                       ("midtrain", "continued next-code training from a pretrain run (new data, lower rate)"),
                       ("sft", "fit the next --horizon codes after --context-length codes, from a midtrain run"),
                       ("rl", "REINFORCE on sampled horizons with a KL leash to the sft run")):
        p = stages.add_parser(name, help=what, description=what,
                              parents=common("out", "config", "data", "cutoff", "seed", "resume", "set"))
        p.add_argument("--in", dest="parent", type=Path,
                       help="run folder of the previous stage" + (" (default: none, a fresh model)" if name == "pretrain"
                                                                  else " (default: none; required by this stage)"))
        p.add_argument("--embargo", type=int, help="rows after the cutoff left out of the held-out codes (default: 0)")
        p.add_argument("--lr", type=float, help=f"peak learning rate (default: {learning_rates[name]})")
        length = p.add_mutually_exclusive_group()
        length.add_argument("--steps", type=int, help="optimizer updates (default: the parent's, else the preset's)")
        length.add_argument("--epochs", type=float, help="passes over the training windows; sets --steps (default: off)")
        p.add_argument("--batch-size", type=int, help="windows per update (default: the parent's, else the preset's)")
        if name in ("sft", "rl"):
            p.add_argument("--context-length", type=int, help="context codes (default: model context - horizon)")
            p.add_argument("--horizon", type=int, help="codes predicted after each context (default: 5)")
        if name == "rl":
            p.add_argument("--reward", choices=["token_accuracy", "return_mse", "pnl", "sharpe"],
                           help="the reward: token_accuracy, return_mse, or the P&L / Sharpe of trading the sign of each "
                                "sampled code's decoded return (default: token_accuracy)")
            p.add_argument("--kl-coef", type=float, help="weight of KL(policy || sft model) (default: 0.05)")
            p.add_argument("--num-samples", type=int, help="horizons sampled per context (default: 8)")
        p.set_defaults(run=cmd_stage)

    p = commands.add_parser("pipeline", help="pretrain, midtrain, sft and rl in turn, compared on the same fresh windows",
                            parents=common("config", "out", "seed", "set", required=("config",)))
    p.set_defaults(run=cmd_pipeline)


def add_sampling(commands: Any) -> None:
    p = commands.add_parser("generate", help="sample codes from a trained run after a prompt",
                            parents=common("seed", "set"))
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="run folder of `chaosfm train`")
    p.add_argument("--prompt", required=True, help='codes to continue, e.g. "80 81 83"')
    p.add_argument("-n", type=int, help="codes to generate (default 50)")
    p.add_argument("--temperature", type=float, help="0 is greedy (default 1)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely codes (default: all codes)")
    p.add_argument("--num-samples", type=int, help="paths to sample, one per line (default 1)")
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("forecast", help="fit any forecaster on a dataset and forecast after its last row",
                            parents=common("data", "out", "seed", "set", required=("data",), helps={
                                "out": "the table to write, .csv or .parquet (default: runs/forecast-YYYYmmdd-HHMMSS.csv)"}))
    p.add_argument("--model", help="a forecaster name (garch, ar, context_parroting, esn, online_predictor, ...) "
                                   "or a run folder (default: give this or --run)")
    p.add_argument("--run", dest="run_dir", type=Path, help="a run folder, the same as --model RUN_DIR (default: none)")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--num-samples", type=int, help="sample paths (default 100)")
    p.add_argument("--asset", help="the asset to forecast (default: every asset)")
    p.add_argument("--context-length", type=int, help="rows of history to forecast from (default: all)")
    p.add_argument("--quantiles", help="quantile levels, comma-separated (default 0.05,0.1,0.25,0.5,0.75,0.9,0.95)")
    p.add_argument("--temperature", type=float, help="a code model's sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, help="a code model samples among its k most likely codes (default: all codes)")
    p.set_defaults(run=cmd_forecast)
