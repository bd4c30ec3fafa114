"""``chaosfm tokenize``, ``chaosfm tokenize inspect`` and ``chaosfm tokenize analyze``."""

from __future__ import annotations

import argparse
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import UsageError, common, overrides, split

_FLAGS = ("tokenizer", "codebook", "patch", "restarts", "bins", "vocab_size", "steps", "cutoff", "seed", "out")
_ANALYZE_FLAGS = ("top_k", "ngram", "horizon", "embargo", "min_count", "seed", "out")
_PATTERN_COLUMNS = ["n", "rank", "pattern", "train_count", "train_mean", "train_hit_rate", "train_t",
                    "fresh_count", "fresh_mean", "fresh_hit_rate", "fresh_t", "fresh_ci_low", "fresh_ci_high"]


def cmd_analyze(args: argparse.Namespace) -> None:
    from chaosfm.jobs import tokenize

    values = overrides(args, {}, _ANALYZE_FLAGS)
    values["run"] = args.run_dir
    if args.data:
        values["data"] = split(args.data)
    report = tokenize.analyze(tokenize.read_analysis(args.config, values))
    analysis = report["analysis"]
    show(f"code spread (top-k {analysis['distribution']['all']['top_k']})", tokenize.distribution_table(analysis))
    show(f"code patterns: forward {analysis['move']} over {analysis['horizon']} rows, ranked on training rows, "
         f"scored on fresh rows (embargo {analysis['embargo']})", report["patterns"][_PATTERN_COLUMNS])
    if len(report["rare"]):
        show(f"rare codes (share below {analysis['rare_threshold']:.3g}) and their decoded values", report["rare"])
    else:
        say("no rare codes")


def cmd_inspect(args: argparse.Namespace) -> None:
    from chaosfm.jobs import tokenize

    report = tokenize.inspect(args.run_dir)
    show(f"tokenizer health: {args.run_dir}", report["table"])
    say(f"wrote {report['plot']}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from chaosfm.jobs import tokenize

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
    p.add_argument("--tokenizer", choices=["fsq", "vqvae", "bins"], help="which tokenizer (default: fsq)")
    p.add_argument("--levels", help="FSQ levels, comma-separated (default: 8,8,4,4)")
    p.add_argument("--codebook", type=int, help="VQ-VAE codebook size (default: 512)")
    p.add_argument("--patch", type=int, help="candles per code (FSQ, VQ-VAE; default: 1)")
    p.add_argument("--no-restarts", dest="restarts", action="store_false", default=None,
                   help="VQ-VAE: do not restart dead codes (default: restart them)")
    p.add_argument("--bins", choices=["uniform", "quantile"], help="bin tokenizer kind (default: uniform)")
    p.add_argument("--vocab-size", type=int, help="bin tokenizer codes, PAD and EOS included (default: 4096)")
    p.add_argument("--steps", type=int, help="optimizer updates (default: the tokenizer's, 2000)")
    p.set_defaults(run=cmd_tokenize)
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    inspect = actions.add_parser("inspect", help="re-read a tokenizer run: health table and plot",
                                 description="re-read a tokenizer run: health table and plot")
    inspect.add_argument("run_dir", help="the run folder of `chaosfm tokenize`")
    inspect.set_defaults(run=cmd_inspect)
    analyze = actions.add_parser(
        "analyze", help="code spread, patterns and their forward moves on training vs fresh rows",
        description="code spread, patterns and their forward moves on training vs fresh rows",
        parents=common("data", "seed", "out", "config", "set", helps={"out": "analysis folder (default: RUN/analysis)"}))
    analyze.add_argument("run_dir", help="the run folder of `chaosfm tokenize`")
    analyze.add_argument("--top-k", type=int, help="codes in top-k coverage and patterns kept per n (default: 20)")
    analyze.add_argument("--ngram", type=int, help="longest code pattern (default: 3)")
    analyze.add_argument("--horizon", type=int, help="rows of the forward move after a pattern (default: 5)")
    analyze.add_argument("--embargo", type=int, help="rows after trained_through not yet fresh (default: the horizon)")
    analyze.add_argument("--min-count", type=int, help="training occurrences a ranked pattern needs (default: 10)")
    analyze.set_defaults(run=cmd_analyze)
