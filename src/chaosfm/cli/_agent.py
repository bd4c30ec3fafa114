"""``chaosfm agent train`` and ``chaosfm agent eval``: the cross-sectional QR-DQN agent."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import Parser, common, overrides


def cmd_agent_train(args: argparse.Namespace) -> None:
    from chaosfm.jobs import agent

    values = overrides(args, agent.FLAGS, ("data", "cutoff", "seed", "out"))
    config = agent.read(args.config, values)
    summary = agent.train(config)
    say(f"trained on {summary['assets']} assets up to {summary['fence']} (rows {summary['trained_rows'][0]}"
        f"–{summary['trained_rows'][1]}); loss {summary['loss']['first']:.3g} -> {summary['loss']['last']:.3g}")
    say(f"wrote the run to {config.out}")


def cmd_agent_eval(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm._config import read_config
    from chaosfm.jobs import agent

    values = overrides(args, agent.EVAL_FLAGS, ("run_dir", "out", "portfolios", "seed"))
    config = read_config(agent.AgentEvalConfig, None, values)
    metrics = agent.evaluate(config)
    rows = [{"book": book, **{k: v for k, v in entry.items() if k != "sharpe_ci"},
             "sharpe 95% CI": "[{:+.3f}, {:+.3f}]".format(*entry["sharpe_ci"])}
            for book, entry in metrics["books"].items()]
    show(f"fresh episodes {metrics['fresh_from'][:10]} to {metrics['fresh_to'][:10]} ({metrics['episodes']}; "
         "the standard error treats overlapping episodes as independent)", pd.DataFrame(rows))
    say(f"wrote {config.out or Path(config.run) / 'eval'}/metrics.json and returns.parquet")


def add(commands: Any) -> None:
    group = commands.add_parser("agent", help="train and score the cross-sectional QR-DQN agent")
    agent_commands = group.add_subparsers(dest="agent_command", metavar="COMMAND", parser_class=Parser)
    p = agent_commands.add_parser("train", help="train the agent on episodes that end at the fence",
                                  parents=common("data", "cutoff", "seed", "out", "config", "set"))
    p.set_defaults(run=cmd_agent_train)
    p = agent_commands.add_parser("eval", help="score a trained agent on fresh episodes beside equal-weight "
                                               "and momentum books", parents=common("out", "seed"))
    p.add_argument("--run", dest="run_dir", type=Path, required=True, help="a `chaosfm agent train` run folder")
    p.add_argument("--portfolios", type=int, help="fresh episodes scored (default 256)")
    p.set_defaults(run=cmd_agent_eval)
