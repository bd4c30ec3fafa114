"""``chaosfm agent train`` and ``chaosfm agent eval``: the cross-sectional agent on a universe of
assets, trained before the fence and scored after it: QR-DQN with a CVaR critic (``agent: qrdqn``,
the default) or TD-MPC2 (``agent: tdmpc2``, :func:`chaosfm.agents.train_tdmpc2_market`; dynamic
CVaR from the encoder's Multiverse Crossing convergence when the run has an encoder). Both agents
share the panel, the fence, the run folder and the evaluation; :data:`AGENTS` is the one place
where they differ.

``train`` loads the universe, fences it (the one cutoff rule of every job), builds the causal
panel with its features standardised on the rows up to the fence (:func:`chaosfm.agents.market_panel`),
trains the agent on episodes that end at the fence row (:func:`chaosfm.agents.train_agent`) and
writes the run folder: ``config.yaml``, ``model.eqx`` (the critic's leaves), ``history.csv`` and
``meta.json`` with ``trained_through``. ``eval`` (into ``RUN/eval`` by default) rebuilds the same
panel from the run's config, reads the critic back and trades it on the rebalance calendar that
starts after the fence plus the embargo and runs to the last row, beside an equal-weight long book
and a momentum book on the same assets and dates (:func:`chaosfm.agents.evaluate_agent`): each book
one dated P&L (a fund of ``portfolios`` portfolios). It writes ``metrics.json`` (per book: Sharpe,
its standard error and interval, PSR, hit rate, turnover, costs, drawdown), ``returns.parquet``
(book, timestamp, net, turnover, cost) and ``report.html`` (the backtest's tearsheet of the agent,
the two reference books beside it); a TD-MPC2 run adds ``telemetry.parquet``, one row per decision
(rebalance, portfolio, asset; :data:`TELEMETRY_COLUMNS`): the encoder's convergence, bifurcation
index and Lyapunov proxy at the decision (NaN without them), the CVaR level acted at, the level
planned and the prior's, the weight, the portfolio's gross exposure, the realised reward. With
``mvx_thresholds`` it also gates the agent by Multiverse Crossing convergence
(:func:`chaosfm.agents.evaluate_gate`), the threshold chosen on the training rows; the convergence
comes from the run's encoder (``encoder``: a pretrained JEPA with a flow head).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, verify_run, write_json
from chaosfm._config import ConfigError, read_config, read_yaml, split_commas
from chaosfm.agents import (
    AgentTrainConfig,
    EnvConfig,
    MarketTDMPC2Agent,
    MarketTDMPC2Config,
    TDMPC2Config,
    evaluate_agent,
    evaluate_gate,
    evaluate_tdmpc2_market,
    market_tdmpc2_agent,
    qrdqn_init,
    tdmpc2_init,
    train_agent,
    train_tdmpc2_market,
)
from chaosfm.data import trained_through, trained_through_to_json
from chaosfm.evaluate import PORTFOLIO, backtest_statistics
from chaosfm.jobs._agent_panel import AgentPanel, build_panel, period_rows, score_classes
from chaosfm.jobs._common import ReadOptions, finish_run, load_data, out_field, write_config
from chaosfm.report import tearsheet_section, write_report
from chaosfm.train import DEVICES_HELP, MESH_HELP, data_mesh, devices_of_the_mesh, mesh_type, training_mesh

__all__ = ["AgentConfig", "AgentEvalConfig", "FLAGS", "EVAL_FLAGS", "evaluate", "read", "train"]

FLAGS = {"agent": "agent", "data": "data", "cutoff": "cutoff", "seed": "seed", "out": "out"}
"""CLI flag -> config key of ``agent train``."""
EVAL_FLAGS = {"run_dir": "run", "out": "out", "portfolios": "portfolios", "mvx_thresholds": "mvx_thresholds"}
"""CLI flag -> config key of ``agent eval``."""
WEIGHTS = "model.eqx"
BOOKS = ("agent", "equal_weight", "momentum")
BOOK_METRICS = ("days", "sharpe", "sharpe_se", "sharpe_ci", "psr", "hit_rate", "mean_return", "total_return",
                "annual_return", "max_drawdown", "turnover", "costs", "non_flat_fraction")
"""What metrics.json keeps of a book's summary (turnover a year, costs in all)."""
GATE_METRICS = ("sharpe", "sharpe_se", "sharpe_ci", "psr", "hit_rate", "traded_fraction", "active_fraction")
Thresholds = Annotated[list[float], BeforeValidator(split_commas)]


class AgentConfig(ReadOptions):
    """``chaosfm agent train``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field("qrdqn", description="the agent (a key of AGENTS): qrdqn, QR-DQN with a CVaR critic, or "
                                            "tdmpc2, TD-MPC2 (a world model, quantile critics, a policy)")
    data: str = Field("sp500_stocks", description="the universe: dataset names or paths (many assets)")
    cutoff: Any = Field(None, description="last timestamp training may see (default: each asset's row at 80%)")
    embargo: int = Field(5, ge=0, description="rows after the fence that are neither trained on nor scored")
    env: dict[str, Any] = Field(default_factory=dict, description="EnvConfig fields: n_assets, holding, ...")
    critic: dict[str, Any] = Field(default_factory=dict, description="QRDQNConfig fields: alpha, hidden, ... "
                                                                     "(agent: qrdqn)")
    tdmpc2: dict[str, Any] = Field(default_factory=dict, description="agent: tdmpc2: TDMPC2Config fields (latent_dim, "
                                   "hidden, horizon, alpha_min, alpha_input, ...) and MarketTDMPC2Config's (alpha, "
                                   "fixed_alpha, actor: mppi|policy, plan_iterations, plan_samples, plan_elites, "
                                   "batch_size, ...)")
    portfolios: int = Field(32, ge=1, description="episodes collected per iteration")
    iterations: int = Field(200, ge=1, description="collect-then-update rounds")
    updates_per_iteration: int = Field(8, ge=1, description="gradient steps per round")
    temperature: float = Field(1.0, gt=0, description="soft allocation temperature")
    encoder: str | None = Field(None, description="a `chaosfm pretrain` run (JEPA): its frozen embedding of each "
                                                  "asset's last context joins the features")
    devices: int | None = Field(None, gt=0, description=DEVICES_HELP)
    mesh: mesh_type("mesh") = Field(None, description=MESH_HELP)  # type: ignore[valid-type]
    seed: int = 0
    out: Path = out_field("agent-train")

    def trainer(self, features: int) -> AgentTrainConfig:
        """The library's config for a panel of ``features`` per asset (bad fields name the key)."""
        try:
            env = EnvConfig(**self.env)
            # The trainer's default critic, fitted to the panel's width, with the config's fields on top.
            critic = AgentTrainConfig().qrdqn.replace(obs_dim=features + 1, **self.critic)
            return AgentTrainConfig(env=env, qrdqn=critic, portfolios=self.portfolios,
                                    iterations=self.iterations, updates_per_iteration=self.updates_per_iteration,
                                    temperature=self.temperature)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"env/critic: {error}") from None

    def tdmpc2_trainer(self, features: int) -> MarketTDMPC2Config:
        """The TD-MPC2 agent's config for a panel of ``features`` per asset (bad fields name the key)."""
        try:
            book = AgentTrainConfig(env=EnvConfig(**self.env), portfolios=self.portfolios,
                                    temperature=self.temperature)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"env: {error}") from None
        fields = {"iterations": self.iterations, "updates_per_iteration": self.updates_per_iteration, **self.tdmpc2}
        try:
            return MarketTDMPC2Config.from_fields(book, features + 1, fields)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"tdmpc2: {error}") from None

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, agent: str) -> str:
        if agent not in AGENTS:
            raise ValueError(f"must be one of {sorted(AGENTS)}, got {agent!r}")
        return agent

    @model_validator(mode="after")
    def _one_agent_block(self) -> "AgentConfig":
        for block, owner in (("critic", "qrdqn"), ("tdmpc2", "tdmpc2")):
            if getattr(self, block) and self.agent != owner:
                raise ValueError(f"{block}: its fields are for agent {owner}, and agent is {self.agent!r}")
        self.devices = devices_of_the_mesh(self.devices, self.mesh, section="")
        return self


class AgentEvalConfig(BaseModel):
    """``chaosfm agent eval``."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a `chaosfm agent train` run folder")
    out: Path | None = Field(None, description="folder to write (default: RUN/eval)")
    portfolios: int = Field(256, ge=1, description="portfolios of each book's fund, each redrawing its assets "
                                                     "every episode")
    mvx_thresholds: Thresholds | None = Field(None, description="Multiverse Crossing convergence thresholds to gate "
                                                                "the agent by (needs an encoder run)")
    seed: int = 0


def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top."""
    return read_config(AgentConfig, path, overrides)


def _universe(config: AgentConfig, convergence: bool = False) -> AgentPanel:
    return build_panel(config.data, config.cutoff, config.embargo, config.encoder, convergence=convergence,
                       seed=config.seed, frame=load_data(config.data, read=config))


@dataclass(frozen=True)
class _Agent:
    """How the job trains, saves, reads back and scores one agent: the only place where they differ."""

    label: str  # the agent's name in reports
    trainer: Callable[[AgentConfig, int], Any]  # the library's config for a panel of F features per asset
    fit: Callable[[AgentPanel, Any, Any], tuple[eqx.Module, dict[str, np.ndarray]]]  # (universe, trainer, key)
    saved_config: Callable[[Any], dict[str, Any] | None]  # what WEIGHTS_CONFIG records of the weights' shapes
    like: Callable[[Any, dict[str, Any] | None], eqx.Module]  # a template of the weights (trainer, saved config)
    evaluator: Callable[[AgentPanel], Callable[..., dict[str, Any]]]  # evaluate_agent's signature, for the panel
    book: Callable[[Any], AgentTrainConfig]  # the episodes, costs and reference books
    risk: Callable[[Any, AgentPanel], Any]  # the CVaR level metrics.json reports
    convergence: Callable[[AgentConfig], bool]  # training needs the encoder's convergence
    gate: bool  # the MVX gate (mvx_thresholds) applies
    mesh: Callable[[AgentConfig, Any], Any]  # the ('data', 'fsdp') mesh of devices / mesh (config, trainer), or None


def _fit_qrdqn(universe: AgentPanel, trainer: AgentTrainConfig, key: Any, mesh: Any = None):
    state, history = train_agent(universe.panel, trainer, first=0, last=universe.last, key=key, mesh=mesh)
    return state.params, history


def _job_mesh(config: AgentConfig, state: Any, grads: Any, batches: dict[str, int]) -> Any:
    """The ('data', 'fsdp') mesh of ``devices`` / ``mesh`` (the code models' rules), or None.

    ``state`` and ``grads`` are shapes (``mesh: auto`` sizes their bytes); ``batches`` are the counts
    split over ``data x fsdp``, by config key.

    Raises:
        ConfigError: naming ``devices``, ``mesh`` or a key of ``batches``.
    """
    if config.devices is None and config.mesh is None:
        return None
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves((state, grads)))
    return training_mesh(config, data_mesh(config.devices, None, section=""), state_bytes=state_bytes, section="",
                         batches=batches)


def _qrdqn_mesh(config: AgentConfig, trainer: AgentTrainConfig) -> Any:
    """QR-DQN's mesh: both networks, Adam's moments and the gradients sized; portfolios and
    ``critic.batch_size`` split."""
    if config.devices is None and config.mesh is None:
        return None
    state = jax.eval_shape(lambda: qrdqn_init(trainer.qrdqn, key=jax.random.key(0)))
    return _job_mesh(config, state, state.params,
                     {"portfolios": trainer.portfolios, "critic.batch_size": trainer.qrdqn.batch_size})


def _tdmpc2_mesh(config: AgentConfig, trainer: MarketTDMPC2Config) -> Any:
    """TD-MPC2's mesh: world model, policy, target critics, both Adam states and the gradients
    sized; portfolios and ``tdmpc2.batch_size`` split."""
    if config.devices is None and config.mesh is None:
        return None
    state = jax.eval_shape(lambda: tdmpc2_init(trainer.model, key=jax.random.key(0)))
    grads = eqx.filter((state.model, state.policy), lambda leaf: np.issubdtype(leaf.dtype, np.inexact))
    return _job_mesh(config, state, grads,
                     {"portfolios": trainer.book.portfolios, "tdmpc2.batch_size": trainer.batch_size})


def _fit_tdmpc2(universe: AgentPanel, trainer: MarketTDMPC2Config, key: Any, mesh: Any = None):
    state, history = train_tdmpc2_market(universe.panel, trainer, first=0, last=universe.last, key=key,
                                         convergence=universe.convergence, mesh=mesh)
    return MarketTDMPC2Agent(state.model, state.policy), history


def _tdmpc2_risk(trainer: MarketTDMPC2Config, universe: AgentPanel) -> Any:
    if universe.convergence is None or trainer.fixed_alpha:
        return trainer.alpha
    model = trainer.model
    return {"dynamic": "cvar_alpha of the encoder's MVX convergence", "alpha_min": model.alpha_min,
            "alpha_max": model.alpha_max, "no_trade": model.no_trade}


AGENTS = {
    "qrdqn": _Agent(
        label="QR-DQN", trainer=AgentConfig.trainer, fit=_fit_qrdqn, saved_config=lambda trainer: None,
        like=lambda trainer, saved: qrdqn_init(trainer.qrdqn, key=jax.random.key(0)).params,
        evaluator=lambda universe: evaluate_agent, book=lambda trainer: trainer,
        risk=lambda trainer, universe: trainer.qrdqn.alpha, convergence=lambda config: False, gate=True,
        mesh=_qrdqn_mesh),
    "tdmpc2": _Agent(
        label="TD-MPC2", trainer=AgentConfig.tdmpc2_trainer, fit=_fit_tdmpc2,
        saved_config=lambda trainer: dataclasses.asdict(trainer.model),
        like=lambda trainer, saved: market_tdmpc2_agent(TDMPC2Config(**saved), key=jax.random.key(0)),
        evaluator=lambda universe: functools.partial(evaluate_tdmpc2_market, convergence=universe.convergence),
        book=lambda trainer: trainer.book, risk=_tdmpc2_risk,
        convergence=lambda config: config.encoder is not None and not config.tdmpc2.get("fixed_alpha", False),
        gate=False, mesh=_tdmpc2_mesh),
}
"""``agent`` -> how the job handles it."""
WEIGHTS_CONFIG = "weights.json"
TELEMETRY = "telemetry.parquet"
TELEMETRY_COLUMNS = ("timestamp", "hold_end", "window_class", "portfolio", "asset", "convergence", "bifurcation",
                     "lyapunov", "alpha", "traded", "action", "prior_action", "weight", "gross_exposure", "reward",
                     "portfolio_return")
"""``agent eval``'s per-decision telemetry of a TD-MPC2 run: one row per (rebalance, portfolio, asset)."""
"""The weights' own config (TD-MPC2's TDMPC2Config), read to rebuild their template."""


def train(config: AgentConfig) -> dict[str, Any]:
    """Train on episodes ending at the fence row; write the run folder; return its summary."""
    kind = AGENTS[config.agent]
    universe = _universe(config, convergence=kind.convergence(config))
    seen, panel, stamps, assets, last = universe.seen, universe.panel, universe.stamps, universe.names, universe.last
    trainer = kind.trainer(config, int(panel.features.shape[-1]))
    mesh = kind.mesh(config, trainer)
    train_key = jax.random.split(jax.random.key(config.seed))[0]
    try:
        weights, history = kind.fit(universe, trainer, train_key, mesh)
    except ValueError as error:  # no episode of K valid assets fits before the fence
        raise ConfigError(f"{config.data}: {error}; fewer assets per portfolio (env.n_assets) or shorter episodes "
                          "(env.episode_rebalances, env.holding) may fit") from None
    out = Path(config.out)
    write_config(out, config)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, weights)
    atomic_write_bytes(out / WEIGHTS, buffer.getvalue())
    saved = kind.saved_config(trainer)
    if saved is not None:
        write_json(out / WEIGHTS_CONFIG, saved)
    atomic_write_bytes(out / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
    summary = {"assets": len(assets), "fence": str(stamps[last]), "rows": len(stamps),
               "trained_rows": [int(np.min(history["first_row"])), int(np.max(history["last_row"]))],
               "loss": {"first": float(history["loss"][0]), "last": float(history["loss"][-1])}}
    if config.encoder is not None:
        summary["encoder"] = {"run": str(config.encoder), "trained_through": universe.encoder_through}
    write_json(out / "train.json", summary)
    finish_run(out, seed=config.seed, trained_through=trained_through_to_json(trained_through(seen)),
               upstream_trained_through=universe.encoder_through)
    return summary


def _book_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if k == "sharpe_ci" else v) for k, v in summary.items() if k in BOOK_METRICS}


def _tearsheet_pnl(result: dict[str, Any], window_class: str) -> pd.DataFrame:
    """The books' dated P&L as the backtest's table (one portfolio row per book and date, of one class)."""
    parts = [result[book]["pnl"].assign(strategy=book, model=book, rule="calendar", asset=PORTFOLIO, position=np.nan,
                                        window_class=window_class) for book in BOOKS]
    return pd.concat(parts, ignore_index=True).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"]))


def _telemetry_frame(records: dict[str, np.ndarray], universe: AgentPanel, window_class: str,
                     holding: int) -> pd.DataFrame:
    """The evaluator's per-decision records as :data:`TELEMETRY_COLUMNS`: dated, the assets named,
    the encoder's Multiverse Crossing scores at each decision's (row, asset) beside them."""
    rows, assets = np.asarray(records["row"]), np.asarray(records["asset"])
    stamps = pd.DatetimeIndex(pd.to_datetime(universe.stamps))

    def at_decision(values: np.ndarray | None) -> np.ndarray:
        return np.full(len(rows), np.nan) if values is None else np.asarray(values, np.float64)[rows, assets]

    frame = pd.DataFrame({
        "timestamp": stamps[rows], "hold_end": stamps[rows + holding], "window_class": window_class,
        "portfolio": records["portfolio"], "asset": np.asarray(universe.names, object)[assets],
        "convergence": at_decision(universe.convergence), "bifurcation": at_decision(universe.bifurcation),
        "lyapunov": at_decision(universe.lyapunov),
        **{name: records[name] for name in TELEMETRY_COLUMNS[8:]}})
    return frame[list(TELEMETRY_COLUMNS)]


def _gate_metrics(sweep: dict[str, Any]) -> dict[str, Any]:
    return {"chosen_threshold": sweep["chosen_threshold"], "chosen_on": "training rows (highest training Sharpe)",
            "thresholds": [{"threshold": entry["threshold"], "chosen": entry["chosen"],
                            "train_sharpe": entry["train"]["sharpe"],
                            **{k: entry["fresh"][k] for k in GATE_METRICS}} for entry in sweep["thresholds"]]}


def evaluate(config: AgentEvalConfig) -> dict[str, Any]:
    """Trade the run's critic on the fresh calendar beside the two reference books; write ``RUN/eval``."""
    run = Path(config.run)
    if not (run / WEIGHTS).is_file():
        raise ConfigError(f"{run}: no {WEIGHTS}; is it a `chaosfm agent train` run?")
    record = verify_run(run)  # names a damaged or missing file
    trained = read_config(AgentConfig, None, read_yaml(run / "config.yaml"))
    kind = AGENTS[trained.agent]
    if config.mvx_thresholds and not kind.gate:
        raise ConfigError(f"mvx_thresholds: the MVX gate applies to agent qrdqn; {run} is agent {trained.agent!r}, "
                          "which gates itself by the encoder's convergence (tdmpc2.no_trade)")
    universe = _universe(trained, convergence=bool(config.mvx_thresholds) or kind.convergence(trained))
    panel, stamps, last = universe.panel, universe.stamps, universe.last
    agent_config = kind.trainer(trained, int(panel.features.shape[-1]))
    trainer = kind.book(agent_config)
    saved = json.loads((run / WEIGHTS_CONFIG).read_text()) if (run / WEIGHTS_CONFIG).is_file() else None
    like = kind.like(agent_config, saved)
    with open(run / WEIGHTS, "rb") as stream:
        params = eqx.tree_deserialise_leaves(stream, like)
    eval_key = jax.random.split(jax.random.key(trained.seed))[1]
    if config.seed:
        eval_key = jax.random.fold_in(eval_key, config.seed)
    try:
        scored = score_classes(universe, params, agent_config, embargo=trained.embargo, key=eval_key,
                               portfolios=config.portfolios, evaluate=kind.evaluator(universe))
    except ConfigError as error:
        raise ConfigError(f"{run}: {error}") from None
    if "fresh" not in scored:
        raise ConfigError(f"{run}: no fresh rows after the fence, the encoder's trained_through and the "
                          f"{trained.embargo}-row embargo")
    result = scored["fresh"]
    first = int(result["rows"][0])
    sweep = None
    if config.mvx_thresholds:
        train_first, _ = period_rows(universe, trained.embargo, trainer.env)["in_sample"]
        try:
            sweep = evaluate_gate(panel, params, trainer, convergence=universe.convergence,
                                  thresholds=config.mvx_thresholds, train_first=train_first, train_last=last,
                                  first=first, last=len(stamps) - 1, key=eval_key, n_portfolios=config.portfolios,
                                  stamps=stamps)
        except ValueError as error:
            raise ConfigError(f"{run}: {error}") from None
    out = Path(config.out or run / "eval")
    write_config(out, config)
    pnl = pd.concat([_tearsheet_pnl(part, name) for name, part in scored.items()], ignore_index=True)
    returns = pnl[["strategy", "timestamp", "window_class", "net", "turnover", "cost"]].rename(
        columns={"strategy": "book"})
    atomic_write_bytes(out / "returns.parquet", returns.to_parquet(index=False))
    telemetry = [_telemetry_frame(part["telemetry"], universe, name, trainer.env.holding)
                 for name, part in scored.items() if "telemetry" in part]
    if telemetry:  # the evaluator records its decisions (TD-MPC2)
        atomic_write_bytes(out / TELEMETRY, pd.concat(telemetry, ignore_index=True).to_parquet(index=False))
    periods = float(result["periods_per_year"])
    metrics = nan_to_none({
        "fresh_from": str(stamps[first]), "fresh_to": str(stamps[-1]), "rebalances": len(result["rows"]),
        "portfolios": config.portfolios, "agent": trained.agent, "env": dataclasses.asdict(trainer.env),
        "alpha": kind.risk(agent_config, universe),
        "periods_per_year": periods,
        "books": {book: _book_metrics(result[book]) for book in BOOKS},
        **({"encoder": {"run": trained.encoder, "trained_through": universe.encoder_through}}
           if trained.encoder is not None else {}),
        **({"within_pretrain": {"from": str(stamps[int(scored["within_pretrain"]["rows"][0])]),
                                "rebalances": len(scored["within_pretrain"]["rows"]),
                                "books": {book: _book_metrics(scored["within_pretrain"][book]) for book in BOOKS}}}
           if "within_pretrain" in scored else {}),
        "note": "one net return per rebalance date (the mean of the portfolios); sharpe_se is over those "
                "non-overlapping holds",
        **({"mvx": _gate_metrics(sweep)} if sweep is not None else {}),
    })
    write_json(out / "metrics.json", metrics)
    statistics = nan_to_none(backtest_statistics(pnl, periods_per_year=periods, confidence=trainer.confidence))
    env = trainer.env
    risk = kind.risk(agent_config, universe)
    risk = f"CVaR {risk:g}" if isinstance(risk, float) else "CVaR from MVX convergence"
    description = (f"The {trained.agent} agent of {run} ({risk}) and two reference books, each a fund of "
                   f"{config.portfolios} portfolios of {env.n_assets} assets redrawn every {env.episode_rebalances} "
                   f"rebalances, rebalanced every {env.holding} rows from {str(stamps[first])[:10]} (after the fence "
                   f"and a {trained.embargo}-row embargo); costs {env.cost_bps:g} bps of the capital traded plus "
                   f"{env.impact:g} × trade²; one return per rebalance, {periods:.1f} a year.")
    section = tearsheet_section(pnl, statistics, description=description, periods_per_year=periods,
                                rolling_window=max(3, round(periods)), detailed=["agent"],
                                trials="the agent and two reference books")
    write_report(out / "report.html", "chaosfm agent eval", [section])
    finish_run(out, seed=trained.seed, trained_through=record.get("trained_through"))
    return metrics
