"""``chaosfm tokenize`` and ``chaosfm tokenize inspect``."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import UsageError, common, overrides, split

_FLAGS = ("tokenizer", "codebook", "patch", "restarts", "bins", "vocab_size", "steps", "cutoff", "seed", "out")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from chaosfm.jobs import tokenize

    if args.action == "inspect":
        if not args.run_dir:
            raise UsageError("usage: chaosfm tokenize inspect RUN_DIR")
        report = tokenize.inspect(args.run_dir)
        show(f"tokenizer health: {args.run_dir}", report["table"])
        say(f"wrote {report['plot']}")
        return
    if args.action is not None:
        raise UsageError(f"unknown tokenize action {args.action!r}; use: chaosfm tokenize inspect RUN_DIR")
    if args.config is None and not args.data:
        raise UsageError("chaosfm tokenize: --data is required (or --config FILE with a data key)")
    values = overrides(args, {}, _FLAGS)
    if args.data:
        values["data"] = split(args.data)
    if args.levels:
        values["levels"] = [int(level) for level in split(args.levels)]
    config = tokenize.read(args.config, values)
    tokenize.run(config)
    report = tokenize.inspect(config.out)
    show(f"tokenizer health: {config.out}", report["table"])
    say(f"wrote {config.out}/metrics.json, the tokenizer, and {report['plot']}")


def add(commands: Any) -> None:
    p = commands.add_parser("tokenize", help="fit a tokenizer (fsq, vqvae, bins) and report its health",
                            parents=common("data", "cutoff", "seed", "out", "config", "set"))
    p.add_argument("action", nargs="?", help="'inspect' to re-read a run folder")
    p.add_argument("run_dir", nargs="?", help="with inspect: the run folder")
    p.add_argument("--tokenizer", choices=["fsq", "vqvae", "bins"], help="which tokenizer (default fsq)")
    p.add_argument("--levels", help="FSQ levels, e.g. 8,8,4,4")
    p.add_argument("--codebook", type=int, help="VQ-VAE codebook size")
    p.add_argument("--patch", type=int, help="candles per code (FSQ, VQ-VAE; default 1)")
    p.add_argument("--no-restarts", dest="restarts", action="store_false", default=None,
                   help="VQ-VAE: do not restart dead codes")
    p.add_argument("--bins", choices=["uniform", "quantile"], help="bin tokenizer kind (default uniform)")
    p.add_argument("--vocab-size", type=int, help="bin tokenizer codes, PAD and EOS included (default 4096)")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.set_defaults(run=cmd_tokenize)
