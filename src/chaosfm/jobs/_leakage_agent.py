"""``chaosfm leakage --agent``: the leakage study in Sharpe ratios, for the cross-sectional agent.

The encoders of the study (``jepa`` and ``jepa_cfm``, each pretrained leaky and fenced; see
:mod:`chaosfm.jobs.leakage`) each hand their frozen embeddings to the same agent recipe (the agent
``agent`` of ``chaosfm agent train``, a key of :data:`chaosfm.jobs.agent.AGENTS`: ``qrdqn``, QR-DQN
with a CVaR critic, or ``tdmpc2``, with ``agent_options`` on top), trained on the rows up to the
pretrain cutoff; a ``features only`` agent without an encoder is the reference. The study trains,
saves nothing of, and scores each agent through that table, as ``agent train`` and ``agent eval``
do: a TD-MPC2 agent on an encoder with a flow head (``jepa_cfm``) takes its CVaR level from that
encoder's Multiverse Crossing convergence (unless ``tdmpc2.fixed_alpha``), the others a fixed one.
Every agent is scored on one rebalance calendar per period, each book a fund of
``agent_portfolios`` portfolios drawn with one key, so two agents trade the same assets on the
same dates:

* **in-domain**: the rows it was trained on;
* **within-pretrain** and **fresh**: by the evaluator's rule on the run folders' ``trained_through``
  (:func:`chaosfm.jobs._agent_panel.period_rows`): a leaky encoder saw the rows up to the fresh
  start, so its agent's holds there are within-pretrain; a fenced encoder's agent has none and
  its fresh period starts after the cutoff and the embargo.

The leakage gap is fresh − within-pretrain (annualised Sharpe, a bootstrap interval over the
two periods' dates); on the same periods (between the cutoff and the fresh start, and after the
fresh start) the paired difference leaky − fenced resamples the shared dates. Each agent's Sharpe
has its standard error and PSR, and a DSR against all the agents of the study (the
configurations tried).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
import yaml

from chaosfm._config import ConfigError
from chaosfm._progress import say
from chaosfm.data import TimeFence, trained_through_from_json
from chaosfm.evaluate import bootstrap_interval, deflated_sharpe_ratio, sharpe_ratio
from chaosfm.jobs._agent_panel import AgentPanel, build_panel, period_rows, score_classes
from chaosfm.jobs.agent import AGENTS, AgentConfig

__all__ = ["FEATURES_ONLY", "agent_report_lines", "agent_study", "agent_tables", "interval_sign"]

FEATURES_ONLY = "features only"
_COLUMNS = ("in_sample", "within_pretrain", "fresh")


def _statistics(result: dict[str, Any]) -> dict[str, Any]:
    book = result["agent"]
    keep = ("days", "sharpe", "sharpe_se", "sharpe_ci", "psr", "hit_rate", "turnover", "max_drawdown")
    entry = {k: (list(book[k]) if k == "sharpe_ci" and book[k] is not None else book[k]) for k in keep}
    entry["from"] = str(book["pnl"]["timestamp"].iloc[0])[:10]
    entry["to"] = str(book["pnl"]["timestamp"].iloc[-1])[:10]
    return entry


def _net(result: dict[str, Any]) -> np.ndarray:
    return result["agent"]["pnl"]["net"].to_numpy(np.float64)


def _annualised_difference(periods: float):
    scale = np.sqrt(periods)

    def difference(a: np.ndarray, b: np.ndarray) -> float:
        return float((sharpe_ratio(a) - sharpe_ratio(b)) * scale)

    return difference


def _gap(fresh: np.ndarray, within: np.ndarray, periods: float, config: Any) -> dict[str, Any]:
    """fresh − within-pretrain annualised Sharpe, the two periods' dates resampled on their own."""
    return bootstrap_interval((fresh, within), _annualised_difference(periods), n_resamples=config.n_bootstrap,
                              confidence=config.confidence, seed=config.seed, vectorized=False, min_size=3)


def _paired(a: np.ndarray, b: np.ndarray, periods: float, config: Any) -> dict[str, Any]:
    """Sharpe of ``a`` − Sharpe of ``b`` on the same dates, the dates resampled together."""
    difference = _annualised_difference(periods)
    out = bootstrap_interval((np.arange(len(a)),), lambda index: difference(a[index], b[index]),
                             n_resamples=config.n_bootstrap, confidence=config.confidence, seed=config.seed,
                             vectorized=False, min_size=3)
    return {**out, "n_dates": int(len(a))}


def _train(universe: AgentPanel, base: AgentConfig, name: str):
    kind = AGENTS[base.agent]
    trainer = kind.trainer(base, int(universe.panel.features.shape[-1]))
    say(f"training the {kind.label} agent on {name} ({base.iterations} iterations)")
    key = jax.random.split(jax.random.key(base.seed))[0]  # the same key for every agent, as `agent train`
    weights, _ = kind.fit(universe, trainer, key)
    return weights, trainer


def _has_flow(run: Path) -> bool:
    """The pretrain run's encoder has a flow head (what Multiverse Crossing needs), by its saved config."""
    return float(json.loads((run / "model_config.json").read_text()).get("cfm_weight", 0.0)) > 0


def agent_study(config: Any, frame: pd.DataFrame, dates: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
                runs: dict[str, Path]) -> dict[str, Any]:
    """Train and score the agents of the study; the metrics (see the module docstring).

    Args:
        config: the study's :class:`~chaosfm.jobs.leakage.LeakageConfig`.
        frame: the universe (many assets).
        dates: per asset ``(pretrain_cutoff, fresh_start)``.
        runs: ``"kind (protocol)"`` -> its pretrain run folder.
    """
    cutoff = {asset: str(c.date()) for asset, (c, _) in dates.items()}
    if "agent" in config.agent_options:
        raise ConfigError("agent_options: the agent is chosen by `agent` (--agent qrdqn|tdmpc2), not agent_options")
    try:
        base = AgentConfig(data=",".join(config.data), cutoff=cutoff, embargo=config.embargo, seed=config.seed,
                           agent=config.agent, **config.agent_options)
    except ValueError as error:
        raise ConfigError(f"agent_options: {error}") from None
    kind = AGENTS[base.agent]
    data = ",".join(config.data)
    fence = TimeFence({asset: pd.Timestamp(c) for asset, c in cutoff.items()})
    universes = {FEATURES_ONLY: build_panel(data, cutoff, config.embargo, frame=frame)}
    for name, run in runs.items():
        say(f"reading the embeddings of {name}")
        dynamic = kind.convergence(base.model_copy(update={"encoder": str(run)})) and _has_flow(run)
        universes[name] = build_panel(data, cutoff, config.embargo, run, convergence=dynamic, seed=config.seed,
                                      frame=frame)
        if name.endswith("(fenced)"):  # checked on what the run says it saw, not on the config
            fence.check_trained_through(trained_through_from_json(universes[name].encoder_through), str(run))
    key = jax.random.split(jax.random.key(config.seed))[1]
    agents, results, periods_per_year = {}, {}, None
    for name, universe in universes.items():
        params, trainer = _train(universe, base, name)
        spans = period_rows(universe, config.embargo, trainer.env)
        scored = score_classes(universe, params, trainer, embargo=config.embargo, key=key,
                               portfolios=config.agent_portfolios, classes=_COLUMNS, evaluate=kind.evaluator(universe))
        agents[name] = (universe, params, trainer, spans)
        results[name] = scored
        periods_per_year = kind.book(trainer).periods_per_year
    # The same periods for every agent: between the cutoff and the fresh start, and after it (the
    # leaky encoders' within-pretrain and fresh rows).
    leaky = next((n for n in runs if n.endswith("(leaky)")), None)
    same_spans = {}
    if leaky is not None:
        spans = agents[leaky][3]
        same_spans = {"between cutoff and fresh start": spans.get("within_pretrain"), "after fresh start":
                      spans.get("fresh")}
    same: dict[str, dict[str, Any]] = {}
    for period, span in same_spans.items():
        if span is None:
            continue
        nets = {}
        for name, (universe, params, trainer, _) in agents.items():
            nets[name] = _net(kind.evaluator(universe)(universe.panel, params, trainer, first=span[0], last=span[1],
                                                       key=key, n_portfolios=config.agent_portfolios,
                                                       stamps=universe.stamps))
        same[period] = {kind: _paired(nets[f"{kind} (leaky)"], nets[f"{kind} (fenced)"], periods_per_year, config)
                        for kind in config.models}
        same[period][f"{FEATURES_ONLY} (reference)"] = {
            "sharpe": {name: float(sharpe_ratio(net) * np.sqrt(periods_per_year)) for name, net in nets.items()}}
    trials = [float(sharpe_ratio(_net(r["fresh"]))) for r in results.values() if "fresh" in r]
    models: dict[str, Any] = {}
    for name, scored in results.items():
        entry: dict[str, Any] = {c: (_statistics(scored[c]) if c in scored else None) for c in _COLUMNS}
        if "fresh" in scored and len(trials) >= 2:
            entry["fresh"]["dsr"] = float(deflated_sharpe_ratio(_net(scored["fresh"]), trial_sharpe_ratios=trials))
        entry["leakage_gap"] = (_gap(_net(scored["fresh"]), _net(scored["within_pretrain"]), periods_per_year, config)
                                if "fresh" in scored and "within_pretrain" in scored else
                                {"value": None, "ci_low": None, "ci_high": None})
        entry["params"] = _params(runs.get(name))
        entry["alpha"] = kind.risk(agents[name][2], agents[name][0])
        entry["encoder_trained_through"] = agents[name][0].encoder_through
        models[name] = entry
    features_only = agents[FEATURES_ONLY]
    env = features_only[2].env
    return {
        "agents": models,
        "same_periods_leaky_minus_fenced": same,
        "periods_per_year": periods_per_year,
        "agent": {"name": base.agent, "label": kind.label, "alpha": kind.risk(features_only[2], features_only[0]),
                  "n_assets": env.n_assets, "holding": env.holding,
                  "cost_bps": env.cost_bps, "impact": env.impact, "portfolios": config.agent_portfolios,
                  "iterations": base.iterations, "n_trials": len(trials)},
    }


def _params(run: Path | None) -> int | None:
    if run is None:
        return None
    return int(yaml.safe_load((run / "metrics.json").read_text())["params"])


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("sharpe") is None:
        return "–"
    return f"{entry['sharpe']:+.2f} ± {1.96 * entry['sharpe_se']:.2f} ({entry['from'][:4]}–{entry['to'][:4]})"


def _interval(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    return f"{entry['value']:+.2f} [{entry['ci_low']:+.2f}, {entry['ci_high']:+.2f}]"


def agent_tables(metrics: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Title -> table: the study's shape (model, params, in-domain, within-pretrain, fresh, gap), and
    the paired leaky − fenced differences on the same periods."""
    rows = [[name, "–" if e["params"] is None else f"{e['params']:,}", *(_cell(e[c]) for c in _COLUMNS),
             "–" if e["fresh"] is None or e["fresh"].get("dsr") is None else f"{e['fresh']['dsr']:.2f}",
             _interval(e["leakage_gap"])] for name, e in metrics["agents"].items()]
    main = pd.DataFrame(rows, columns=["agent on", "encoder params", "in-domain", "within-pretrain OOS",
                                       "fresh OOS", "fresh DSR", "leakage gap"])
    paired = []
    for period, kinds in metrics["same_periods_leaky_minus_fenced"].items():
        for kind, entry in kinds.items():
            if "value" in entry:
                paired.append([period, kind, entry["n_dates"], _interval(entry)])
    same = pd.DataFrame(paired, columns=["period", "encoder", "dates", "Sharpe leaky − fenced [95% CI]"])
    return {"agent Sharpe (annualised, ± 95% SE; years)": main, "same periods, leaky minus fenced": same}


def interval_sign(entry: dict[str, Any] | None, missing: str = "not measurable") -> str:
    """'above zero', 'below zero' or 'indistinguishable from zero' by the confidence interval."""
    if not entry or entry.get("value") is None:
        return missing
    if entry["ci_low"] > 0:
        return "above zero"
    if entry["ci_high"] < 0:
        return "below zero"
    return "indistinguishable from zero"


def agent_report_lines(metrics: dict[str, Any], kinds: list[str]) -> list[str]:
    """Markdown: the tables and one plain sentence per encoder kind, generated from the numbers."""
    lines = []
    for title, table in agent_tables(metrics).items():
        lines += [f"## {title}", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        lines.append("")
    lines += ["## Reading", ""]
    for kind in kinds:
        gap = metrics["agents"].get(f"{kind} (leaky)", {}).get("leakage_gap")
        pairs = [(period, entry.get(kind)) for period, entry in metrics["same_periods_leaky_minus_fenced"].items()]
        same = "; ".join(f"{period} {_interval(e)}, {interval_sign(e)}" for period, e in pairs) or "not measurable"
        lines.append(f"- {kind}: the leaky agent's Sharpe gap (fresh − within-pretrain) is {_interval(gap)}, "
                     f"{interval_sign(gap)}; leaky minus fenced on the same dates: {same}. A gap with no same-date "
                     "difference comes from the periods differing, not from what the encoder saw.")
    return lines
