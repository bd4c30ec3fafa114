"""``chaosfm shard``: the training windows of a train config as ArrayRecord shards."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say
from chaosfm.cli._parser import UsageError, common, overrides, split


def cmd_shard(args: argparse.Namespace) -> None:
    from chaosfm.jobs import shard

    if args.config is None and not args.data:
        raise UsageError("chaosfm shard: --config FILE (a chaosfm train config) is required, or --data with --set keys")
    values = overrides(args, shard.FLAGS, ("cutoff", "seed", "out", "num_shards"))
    if args.data:
        values["data.names"] = split(args.data)
    config = shard.read(args.config, values)
    index = shard.run(config)
    records = ", ".join(str(part["records"]) for part in index["shards"])
    say(f"wrote {index['windows']} windows of {index['window']} codes in {len(index['shards'])} shards "
        f"({records} records) to {config.out}; train from them with chaosfm train --config FILE --shards {config.out}")


def add(commands: Any) -> None:
    p = commands.add_parser("shard", help="write a train config's training windows as ArrayRecord shards (Grain reads them)",
                            parents=common("config", "out", "data", "cutoff", "seed", "set",
                                           helps={"out": "the shard folder to create; never overwritten "
                                                         "(default: runs/shard-YYYYmmdd-HHMMSS)"}))
    p.add_argument("--num-shards", type=int, metavar="N", help="ArrayRecord files to spread the windows over (default: 4)")
    p.set_defaults(run=cmd_shard)
