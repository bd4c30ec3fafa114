"""``chaosfm config size``: a model + train config sized for a parameter budget, with its costs."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import Parser, common, overrides


def cmd_config_size(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.jobs import config_size

    values = overrides(args, config_size.FLAGS, ("params", "size", "tokens", "model", "devices", "device_kind",
                                                 "context_length", "mfu", "data", "tokenizer", "seed", "out"))
    result = config_size.run(config_size.read(None, values))
    plan = result["plan"]
    show(f"{plan['kind']} of {plan['params']:,} parameters on {plan['devices']} x {plan['device_kind']}",
         pd.DataFrame(result["table"]))
    if result["out"] is None:
        print(result["yaml"], end="")
    else:
        say(f"wrote {result['out']}: chaosfm train --config {result['out']} --out RUN_DIR")


def add(commands: Any) -> None:
    group = commands.add_parser("config", help="write configs: a model + train config sized for a budget")
    kinds = group.add_subparsers(dest="config_command", metavar="CONFIG", parser_class=Parser, required=True)
    p = kinds.add_parser("size", help="size a GPT or Mamba for a parameter budget: shape, tokens, batch, lr, costs",
                         parents=common("data", "seed", "out", "set", helps={
                             "out": "the YAML file to write (default: print it)"}))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--params", help="parameter budget: 150M, 1.3B, 2e9 (suffixes K, M, B, T; default: give this or --size)")
    budget.add_argument("--size", help="T-shirt preset: S, M, L, XL (125M, 350M, 760M, 1.3B parameters; default: give this or --params)")
    p.add_argument("--tokens", help="training tokens (default: 20 per parameter, Chinchilla)")
    p.add_argument("--model", help="gpt or mamba (default: gpt)")
    p.add_argument("--devices", type=int, help="data-parallel devices (default 1)")
    p.add_argument("--device-kind", help="v5p, v5e, v4, h100, a100 or cpu (default cpu: its peak is measured)")
    p.add_argument("--context-length", type=int, help="codes per window (default: from the width)")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation the time estimate assumes (default 0.4)")
    p.add_argument("--tokenizer", help="tokenizer kind whose default vocabulary sizes the model (default fsq)")
    p.set_defaults(run=cmd_config_size)
