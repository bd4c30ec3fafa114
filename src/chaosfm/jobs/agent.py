"""``chaosfm agent train`` and ``chaosfm agent eval``: the cross-sectional QR-DQN agent on a
universe of assets, trained before the fence and scored after it.

``train`` loads the universe, fences it (the one cutoff rule of every job), builds the causal
panel with its features standardised on the rows up to the fence (:func:`chaosfm.agents.market_panel`),
trains the agent on episodes that end at the fence row (:func:`chaosfm.agents.train_agent`) and
writes the run folder: ``config.yaml``, ``model.eqx`` (the critic's leaves), ``history.csv`` and
``meta.json`` with ``trained_through``. ``eval`` (into ``RUN/eval`` by default) rebuilds the same panel from the run's config,
reads the critic back and scores it on episodes that start after the fence plus the embargo,
beside an equal-weight long book and a momentum book on the same episodes
(:func:`chaosfm.agents.evaluate_agent`): ``metrics.json`` and ``returns.parquet`` (one row per
book, episode and rebalance).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, verify_run, write_json
from chaosfm._config import ConfigError, read_config, read_yaml
from chaosfm.agents import (
    AgentTrainConfig,
    EnvConfig,
    evaluate_agent,
    market_panel,
    qrdqn_init,
    train_agent,
)
from chaosfm.data import trained_through, trained_through_to_json
from chaosfm.jobs._common import finish_run, load_data, resolve_fence, write_config

__all__ = ["AgentConfig", "AgentEvalConfig", "FLAGS", "EVAL_FLAGS", "evaluate", "read", "train"]

FLAGS = {"data": "data", "cutoff": "cutoff", "seed": "seed", "out": "out"}
"""CLI flag -> config key of ``agent train``."""
EVAL_FLAGS = {"run_dir": "run", "out": "out", "portfolios": "portfolios"}
"""CLI flag -> config key of ``agent eval``."""
WEIGHTS = "model.eqx"
BOOKS = ("agent", "equal_weight", "momentum")


class AgentConfig(BaseModel):
    """``chaosfm agent train``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("sp500_stocks", description="the universe: dataset names or paths (many assets)")
    cutoff: Any = Field(None, description="last timestamp training may see (default: each asset's row at 80%)")
    embargo: int = Field(5, ge=0, description="rows after the fence that are neither trained on nor scored")
    env: dict[str, Any] = Field(default_factory=dict, description="EnvConfig fields: n_assets, holding, ...")
    critic: dict[str, Any] = Field(default_factory=dict, description="QRDQNConfig fields: alpha, hidden, ...")
    portfolios: int = Field(32, ge=1, description="episodes collected per iteration")
    iterations: int = Field(200, ge=1, description="collect-then-update rounds")
    updates_per_iteration: int = Field(8, ge=1, description="gradient steps per round")
    temperature: float = Field(1.0, gt=0, description="soft allocation temperature")
    seed: int = 0
    out: Path = Path("runs/agent")

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


class AgentEvalConfig(BaseModel):
    """``chaosfm agent eval``."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a `chaosfm agent train` run folder")
    out: Path | None = Field(None, description="folder to write (default: RUN/eval)")
    portfolios: int = Field(256, ge=1, description="fresh episodes scored")
    seed: int = 0


def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top."""
    return read_config(AgentConfig, path, overrides)


def _panel(config: AgentConfig):
    """The universe, its panel, the fence row and what training may see."""
    frame = load_data(config.data)
    fence = resolve_fence(frame, config.cutoff, embargo=config.embargo)
    seen = frame[fence.before(frame)]
    # One fence row for the whole calendar: the earliest of the assets' last training rows, so no
    # asset's rows after its own cutoff reach a training episode.
    fit_end = seen.groupby("asset")["timestamp"].max().min()
    panel, stamps, assets = market_panel(frame, fit_end=fit_end)
    last = int(np.flatnonzero(pd.Index(stamps) <= fit_end)[-1])
    return frame, seen, panel, stamps, assets, last


def train(config: AgentConfig) -> dict[str, Any]:
    """Train on episodes ending at the fence row; write the run folder; return its summary."""
    _, seen, panel, stamps, assets, last = _panel(config)
    trainer = config.trainer(int(panel.features.shape[-1]))
    train_key = jax.random.split(jax.random.key(config.seed))[0]
    state, history = train_agent(panel, trainer, first=0, last=last, key=train_key)
    out = Path(config.out)
    write_config(out, config)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state.params)
    atomic_write_bytes(out / WEIGHTS, buffer.getvalue())
    atomic_write_bytes(out / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
    summary = {"assets": len(assets), "fence": str(stamps[last]), "rows": len(stamps),
               "trained_rows": [int(np.min(history["first_row"])), int(np.max(history["last_row"]))],
               "loss": {"first": float(history["loss"][0]), "last": float(history["loss"][-1])}}
    write_json(out / "train.json", summary)
    finish_run(out, seed=config.seed, trained_through=trained_through_to_json(trained_through(seen)))
    return summary


def evaluate(config: AgentEvalConfig) -> dict[str, Any]:
    """Score the run's critic on fresh episodes beside the two reference books."""
    run = Path(config.run)
    if not (run / WEIGHTS).is_file():
        raise ConfigError(f"{run}: no {WEIGHTS}; is it a `chaosfm agent train` run?")
    record = verify_run(run)  # names a damaged or missing file
    trained = read_config(AgentConfig, None, read_yaml(run / "config.yaml"))
    _, _, panel, stamps, _, last = _panel(trained)
    trainer = trained.trainer(int(panel.features.shape[-1]))
    like = qrdqn_init(trainer.qrdqn, key=jax.random.key(0)).params
    with open(run / WEIGHTS, "rb") as stream:
        params = eqx.tree_deserialise_leaves(stream, like)
    first = last + trained.embargo + 1
    if first + trainer.env.episode_rows >= len(stamps):
        raise ConfigError(f"{run}: {len(stamps) - first} rows after the fence and embargo; an episode needs "
                          f"{trainer.env.episode_rows + 1}")
    eval_key = jax.random.split(jax.random.key(trained.seed))[1]
    if config.seed:
        eval_key = jax.random.fold_in(eval_key, config.seed)
    result = evaluate_agent(panel, params, trainer, first=first, last=len(stamps) - 1, key=eval_key,
                            n_portfolios=config.portfolios)
    out = Path(config.out or run / "eval")
    write_config(out, config)
    frames = []
    for book in BOOKS:
        returns = np.asarray(result[book]["returns"])
        episode, rebalance = np.indices(returns.shape)
        frames.append(pd.DataFrame({"book": book, "episode": episode.ravel(), "rebalance": rebalance.ravel(),
                                    "return": returns.ravel()}))
    atomic_write_bytes(out / "returns.parquet", pd.concat(frames, ignore_index=True).to_parquet(index=False))
    metrics = {
        "fresh_from": str(stamps[first]), "fresh_to": str(stamps[-1]), "episodes": config.portfolios,
        "env": dataclasses.asdict(trainer.env), "alpha": trainer.qrdqn.alpha,
        "periods_per_year": float(result["periods_per_year"]),
        "books": {book: {k: (np.asarray(v).tolist() if k == "sharpe_ci" else float(v))
                         for k, v in result[book].items() if k != "returns"} for book in BOOKS},
        "note": "sharpe_se treats the pooled rebalance returns as independent; episodes overlap in time, "
                "so it is a lower bound",
    }
    write_json(out / "metrics.json", metrics)
    finish_run(out, seed=trained.seed, trained_through=record.get("trained_through"))
    return metrics
