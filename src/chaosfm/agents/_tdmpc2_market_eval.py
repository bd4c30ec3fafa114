"""Scoring the market TD-MPC2 agent on the calendar, with its per-decision telemetry.

:func:`evaluate_tdmpc2_market` is :func:`~chaosfm.agents.evaluate_agent`'s calendar, portfolios and
reference books (the same draws and keys, so the reference books are identical), the agent's book
replaced by the TD-MPC2 book of :mod:`chaosfm.agents._tdmpc2_market`: at each rebalance each
asset's CVaR level and trade flag from the convergence, its level from the configured actor (MPPI
in the latent space, or the policy prior), the soft allocation over the traded assets.

**Telemetry.** Every decision (rebalance, portfolio, asset) is also recorded: what the agent acted
at (the CVaR level, the trade flag), what it chose (the planned level and, for comparison, the
prior's level at the same CVaR level; the target weight and the portfolio's gross exposure) and
what it earned (the asset's realised reward, the portfolio's net return over the hold). The
realised reward is read from the panel after the rollouts, never by the decision.

Dimension letters: T rows of the panel, A assets of the panel, K assets per portfolio, P
portfolios, G episodes of the calendar, n rebalances per episode, S rebalances of the calendar,
D = S P K decisions, h rows per hold.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.agents._env import MarketPanel
from chaosfm.agents._evaluation import (
    STRATEGIES,
    _gated_allocation,
    _over_calendar,
    _prepare,
    _reference_rollouts,
    _summary,
)
from chaosfm.agents._tdmpc2_market import (
    ACTORS,
    MarketTDMPC2Agent,
    MarketTDMPC2Config,
    _convergence,
    _risk,
)
from chaosfm.agents._trainer import _observe, _reward

__all__ = ["evaluate_tdmpc2_market"]

_PLAN_STREAM = 2**31 - 1
"""The evaluation's plans draw from ``fold_in(key, _PLAN_STREAM)``: the portfolios' draws use the
key's low indices (``split(key, (P, G))``), so the plans' keys stay apart from them."""


@eqx.filter_jit
def _agent_rollouts(agent: MarketTDMPC2Agent, panel: MarketPanel, convergence: Array | None, keys: PRNGKeyArray,
                    starts: Int[Array, " G"], lengths: Int[Array, " G"], plan_key: PRNGKeyArray,
                    config: MarketTDMPC2Config):
    def book(state, level):
        obs = _observe(panel, state, level)
        alpha, trade = _risk(config, convergence, state)
        # A plan's randomness is a function of its (row, asset): the same in every portfolio.
        row_key = jax.random.fold_in(plan_key, state.t)
        asset_keys = jax.vmap(lambda a: jax.random.fold_in(row_key, a))(state.assets)
        scores = ACTORS[config.actor](agent, obs, alpha, config, asset_keys)
        weights = _gated_allocation(scores, trade, config.book)
        level = jnp.where(trade, scores, 0.0)
        extra = {"non_flat": jnp.mean((level != 0).astype(jnp.float32)),
                 "traded": jnp.mean(trade.astype(jnp.float32)),
                 # Telemetry, per asset: what the agent saw and chose at this decision.
                 "row": state.t, "alpha": alpha, "trade": trade, "level": level,
                 "prior": agent.scores(obs, alpha), "weight": weights}
        return weights, level, extra

    return _over_calendar(book, panel, config.book, keys, starts, lengths)


def _telemetry(record: dict[str, Array], assets: Array, calendar_rows: np.ndarray, panel: MarketPanel,
               config: MarketTDMPC2Config) -> dict[str, np.ndarray]:
    """One flat record per decision (portfolio, rebalance, asset) from the ``(P, G, n[, K])`` rollouts.

    The realised reward is the training reward (:func:`~chaosfm.agents._trainer._reward`: the level
    times the asset's return over the hold minus the cost of moving from the previous level, 0 at
    an episode's first rebalance), read from the panel after the fact.
    """
    total, env = len(calendar_rows), config.env
    level = np.asarray(record["level"], np.float32)  # (P, G, n, K)
    previous = np.concatenate([np.zeros_like(level[:, :, :1]), level[:, :, :-1]], axis=2)
    drawn = np.broadcast_to(np.asarray(assets)[:, :, None, :], level.shape)  # (P, G, n, K)

    def dated(values):  # (P, G, n, ...) -> (P, S, ...) in calendar order, padding dropped
        values = np.asarray(values)
        return values.reshape(values.shape[0], -1, *values.shape[3:])[:, :total]

    rows, drawn, level, previous = dated(record["row"]), dated(drawn), dated(level), dated(previous)
    returns = np.asarray(panel.returns, np.float64)
    held = returns[rows[..., None, None] + 1 + np.arange(env.holding)[:, None], drawn[..., None, :]]  # (P, S, h, K)
    asset_returns = np.prod(1.0 + held, axis=-2) - 1.0  # (P, S, K), as env_step compounds a hold
    reward = np.asarray(_reward(config.book, jnp.asarray(level), jnp.asarray(previous),
                                jnp.asarray(asset_returns, jnp.float32)))
    weight = dated(record["weight"])
    portfolios, steps, width = level.shape
    per_decision = {
        "row": np.broadcast_to(rows[..., None], level.shape), "portfolio": np.broadcast_to(
            np.arange(portfolios)[:, None, None], level.shape), "asset": drawn,
        "alpha": dated(record["alpha"]), "traded": dated(record["trade"]), "action": level,
        "prior_action": dated(record["prior"]), "weight": weight, "reward": reward,
        "gross_exposure": np.broadcast_to(np.sum(np.abs(weight), axis=-1, keepdims=True), level.shape),
        "portfolio_return": np.broadcast_to(dated(record["return"])[..., None], level.shape)}
    # Decisions in time order: rebalance, then portfolio, then the portfolio's assets.
    return {name: np.swapaxes(np.asarray(v), 0, 1).reshape(steps * portfolios * width)
            for name, v in per_decision.items()}


def evaluate_tdmpc2_market(
    panel: MarketPanel,
    agent: MarketTDMPC2Agent,
    config: MarketTDMPC2Config,
    *,
    first: int,
    last: int,
    key: PRNGKeyArray,
    n_portfolios: int,
    stamps: np.ndarray | None = None,
    convergence: Float[np.ndarray, "T A"] | None = None,
) -> dict[str, Any]:
    """The agent's book beside the equal-weight and momentum books on the rebalance calendar of rows
    ``[first, last]``: :func:`~chaosfm.agents.evaluate_agent`'s result (same calendar, portfolios,
    draws and keys, so the reference books are identical), the agent's entry with
    ``non_flat_fraction`` and ``traded_fraction`` (asset-rebalances with a non-zero level / allowed
    to trade by the convergence), and ``telemetry``: ``(D,)`` arrays over the ``D = S P K``
    decisions in time order (rebalance, portfolio, asset): ``row`` (the panel row at whose close
    it is made), ``portfolio``, ``asset`` (the panel's column), ``alpha`` (the CVaR level acted
    at), ``traded`` (allowed by the convergence), ``action`` (the level chosen, 0 if not traded),
    ``prior_action`` (the policy prior's level at the same alpha), ``weight`` (the asset's target
    weight), ``reward`` (the realised training reward of the level, in percent times the reward
    scale), ``gross_exposure`` (the portfolio's ``sum |w|``) and ``portfolio_return`` (its net
    return over the hold, the episode's exit cost included).

    Raises:
        ValueError: as :func:`~chaosfm.agents.evaluate_agent`, or ``convergence`` not ``(T, A)``.
    """
    calendar, keys, starts, lengths = _prepare(panel, agent, config.book, first, last, key, n_portfolios)
    records, assets = {}, {}
    plan_key = jax.random.fold_in(key, _PLAN_STREAM)
    records["agent"], assets["agent"] = _agent_rollouts(agent, panel, _convergence(panel, convergence), keys, starts,
                                                        lengths, plan_key, config)
    for name, (record, drawn) in _reference_rollouts(panel, keys, starts, lengths, config=config.book).items():
        records[name], assets[name] = record, drawn
    drawn = np.asarray(assets["agent"])
    for name in STRATEGIES[1:]:  # one draw per key and row: every book trades the same assets
        assert np.array_equal(drawn, np.asarray(assets[name]))
    result: dict[str, Any] = {name: _summary(records[name], calendar, stamps, config.book) for name in STRATEGIES}
    telemetry = _telemetry(records["agent"], assets["agent"], calendar.rows, panel, config)
    return {**result, "rows": calendar.rows, "assets": drawn, "periods_per_year": config.book.periods_per_year,
            "telemetry": telemetry}
