"""``chaosfm agent train`` and ``chaosfm agent eval``: the cross-sectional agent (QR-DQN or TD-MPC2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import Parser, common, overrides


def cmd_agent_train(args: argparse.Namespace) -> None:
    from chaosfm.jobs import agent

    values = overrides(args, agent.FLAGS, ("agent", "data", "cutoff", "seed", "out"))
    config = agent.read(args.config, values)
    summary = agent.train(config)
    say(f"trained on {summary['assets']} assets up to {summary['fence']} (rows {summary['trained_rows'][0]}"
        f"–{summary['trained_rows'][1]}); loss {summary['loss']['first']:.3g} -> {summary['loss']['last']:.3g}")
    say(f"wrote the run to {config.out}")


def cmd_agent_eval(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm._config import read_config
    from chaosfm.jobs import agent

    values = overrides(args, agent.EVAL_FLAGS, ("run_dir", "out", "portfolios", "seed", "mvx_thresholds"))
    config = read_config(agent.AgentEvalConfig, None, values)
    metrics = agent.evaluate(config)

    def interval(low_high):
        return "–" if low_high[0] is None else "[{:+.3f}, {:+.3f}]".format(*low_high)

    rows = [{"book": book, "sharpe": entry["sharpe"], "se": entry["sharpe_se"], "95% CI": interval(entry["sharpe_ci"]),
             "psr": entry["psr"], "hit rate": entry["hit_rate"], "max drawdown": entry["max_drawdown"],
             "turnover/yr": entry["turnover"], "costs": entry["costs"]} for book, entry in metrics["books"].items()]
    show(f"fresh calendar {metrics['fresh_from'][:10]} to {metrics['fresh_to'][:10]}: {metrics['rebalances']} "
         f"rebalances, each book a fund of {metrics['portfolios']} portfolios (one return per date)",
         pd.DataFrame(rows))
    if "mvx" in metrics:
        gate = metrics["mvx"]
        rows = [{"threshold": entry["threshold"], "chosen": "*" if entry["chosen"] else "",
                 "train sharpe": entry["train_sharpe"], "sharpe": entry["sharpe"],
                 "95% CI": interval(entry["sharpe_ci"]),
                 "hit rate": entry["hit_rate"], "traded": entry["traded_fraction"],
                 "active": entry["active_fraction"]} for entry in gate["thresholds"]]
        show(f"agent gated by MVX convergence; threshold chosen on the training rows: {gate['chosen_threshold']}",
             pd.DataFrame(rows))
    say(f"wrote {config.out or Path(config.run) / 'eval'}/metrics.json, returns.parquet and report.html")


def add(commands: Any) -> None:
    group = commands.add_parser("agent", help="train and score the cross-sectional agent (QR-DQN or TD-MPC2)")
    agent_commands = group.add_subparsers(dest="agent_command", metavar="COMMAND", parser_class=Parser)
    p = agent_commands.add_parser("train", help="train the agent on episodes that end at the fence",
                                  parents=common("data", "cutoff", "seed", "out", "config", "set"))
    p.add_argument("--agent", help="the agent: qrdqn (default; QR-DQN with a CVaR critic) or tdmpc2 (a world "
                                   "model, quantile critics and a policy)")
    p.set_defaults(run=cmd_agent_train)
    p = agent_commands.add_parser("eval", help="trade a trained agent on the fresh calendar beside equal-weight "
                                               "and momentum books", parents=common("out", "seed", helps={
                                      "out": "folder to write (default: RUN/eval)"}))
    p.add_argument("--run", dest="run_dir", type=Path, required=True, help="a `chaosfm agent train` run folder")
    p.add_argument("--portfolios", type=int, help="portfolios of each book's fund (default 256)")
    p.add_argument("--mvx-thresholds", dest="mvx_thresholds", metavar="T1,T2,...",
                   help="gate the agent by Multiverse Crossing convergence at these thresholds (the best chosen "
                        "on the training rows; needs an agent trained with an encoder run; default: no gate)")
    p.set_defaults(run=cmd_agent_eval)
