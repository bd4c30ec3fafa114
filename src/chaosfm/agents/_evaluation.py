"""Calendar evaluation of the cross-sectional agent: one dated P&L per book, beside two reference
books, and the Multiverse Crossing gate.

**The calendar.** Every book trades one shared rebalance calendar over rows ``[first, last]``:
rebalances at the closes of rows ``first, first + h, ..., first + (S - 1) h`` (``h = holding``,
``S = (last - first) // h``), so every hold ends inside the rows and the whole period is traded,
not short random episodes. The calendar is cut into episodes of the environment's
``episode_rebalances`` (``n``) rebalances, the last one shorter when ``n`` does not divide ``S``.

**The portfolios.** ``P`` portfolios trade the calendar side by side. Each portfolio redraws its
``K`` assets at the start of every episode (:func:`~chaosfm.agents.env_reset_at`, from the key of
the portfolio and episode): so the critic's position level starts flat at each episode's first
rebalance and runs through its ``n`` rebalances, as in training, and an asset need only be valid
over one episode, not the whole period. At the end of each episode the book is closed out: the
exit trade (the drifted weights back to flat) is charged the environment's costs, so the redraw
is paid for (the training episodes leave their last positions open). The agent, the equal-weight
long book and the momentum book call the same draw with the same key and row, so they trade
exactly the same assets on the same dates (asserted).

**The dated P&L.** A book's return on a date (the panel's timestamp at the end of each hold) is
the mean of its ``P`` portfolios' net returns: an equally weighted fund of portfolios,
rebalanced to equal capital at every date. Its Sharpe ratio, standard error (Lo 2002 with
Mertens' 2002 correction), interval, PSR (Bailey & López de Prado 2012), annual turnover, costs
and largest drawdown are :func:`chaosfm.evaluate.summarise_returns` of that one series, annualised
by ``rows_per_year / holding`` rebalances a year. The holds of one series do not overlap, so the
standard error's independence assumption is the usual one of a backtest (serially uncorrelated
returns), not the pooling of episodes that share market moves.

**The gate.** :func:`evaluate_gate` trades the agent only where a ``(T, A)`` convergence score
(Multiverse Crossing's ``W / (W + B)``; NaN where unknown) is at least a threshold: at each
rebalance the assets below it (or NaN) get weight 0 and the soft allocation is made over the
others (the construction of :func:`~chaosfm.agents.soft_allocation` on the remaining scores;
one remaining asset of a market-neutral book is flat; none remaining, the book is flat). The
threshold is chosen on the training rows only (the highest training Sharpe), then every
threshold is reported on the fresh rows.

Dimension letters: T rows of the panel, A assets of the panel, K assets per portfolio, P
portfolios, G episodes of the calendar, n rebalances per episode, S rebalances of the calendar.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm.agents._allocation import soft_allocation
from chaosfm.agents._env import MarketPanel, env_observe, env_reset_at, env_step
from chaosfm.agents._qrdqn import QuantileNetwork
from chaosfm.agents._trainer import AgentTrainConfig, _book_score, _check_width, _observe, _scores
from chaosfm.evaluate import summarise_returns, trade_cost

__all__ = ["evaluate_agent", "evaluate_gate"]

STRATEGIES = ("agent", "equal_weight", "momentum")


class _Calendar(NamedTuple):
    starts: np.ndarray  # (G,) the first rebalance row of each episode
    lengths: np.ndarray  # (G,) the rebalances of each episode (the last may be short)
    rows: np.ndarray  # (S,) every rebalance row


def _calendar(panel: MarketPanel, config: AgentTrainConfig, first: int, last: int) -> _Calendar:
    """The rebalance calendar of rows ``[first, last]``, checked to hold ``K`` valid assets per episode."""
    env = config.env
    total = (last - first) // env.holding
    if first < 0 or last >= panel.valid.shape[0] or total < 1:
        raise ValueError(f"rows [{first}, {last}] of a panel of {panel.valid.shape[0]} rows hold no rebalance of "
                         f"{env.holding} rows")
    starts = first + np.arange(0, total, env.episode_rebalances) * env.holding
    lengths = np.minimum(env.episode_rebalances, total - (starts - first) // env.holding)
    valid = np.asarray(panel.valid)
    invalid_before = np.concatenate([np.zeros((1, valid.shape[1]), np.int64), np.cumsum(~valid, axis=0)])
    usable = np.sum(invalid_before[starts + lengths * env.holding + 1] == invalid_before[starts], axis=1)  # (G,)
    short = np.flatnonzero(usable < env.n_assets)
    if len(short):
        g = short[0]
        raise ValueError(f"rows [{starts[g]}, {starts[g] + lengths[g] * env.holding}] (an episode of the calendar "
                         f"[{first}, {last}]): {usable[g]} assets valid on every row, n_assets = {env.n_assets} needed")
    return _Calendar(starts.astype(np.int32), lengths.astype(np.int32), first + np.arange(total) * env.holding)


def _gated_allocation(scores: Float[Array, " K"], allowed: Bool[Array, " K"], config: AgentTrainConfig
                      ) -> Float[Array, " K"]:
    """:func:`soft_allocation` over the allowed assets only, 0 for the others (all 0 if none is allowed).

    The allowed assets are moved to the front (in their order) and the allocation of the first
    ``m`` of them is taken, ``m`` their number: one allocation per possible ``m``, shapes static.
    """
    size = scores.shape[0]
    order = jnp.argsort(jnp.where(allowed, 0, 1), stable=True)  # allowed first
    count = jnp.sum(allowed.astype(jnp.int32))
    ranked = scores[order]
    env = config.env
    options = jnp.stack([
        jnp.pad(soft_allocation(ranked[:m], temperature=config.temperature, net_exposure=env.net_exposure,
                                gross_leverage=env.gross_leverage), (0, size - m))
        for m in range(1, size + 1)
    ])  # (K, K): row m - 1 allocates over the first m
    chosen = jnp.where(count > 0, options[jnp.maximum(count - 1, 0)], 0.0)
    return jnp.zeros_like(chosen).at[order].set(chosen)


def _calendar_episode(book, panel: MarketPanel, config: AgentTrainConfig, key: PRNGKeyArray, t: Int[Array, ""],
             length: Int[Array, ""]) -> tuple[dict[str, Array], Int[Array, " K"]]:
    """One episode of ``book`` from row ``t``: ``(n,)`` per-rebalance records (those past ``length``
    are padding) and its ``(K,)`` assets. ``book(state, level) -> (weights, level, extra records)``."""
    env = config.env
    start = env_reset_at(panel, env, t, key=key, rebalances=length)

    def rebalance(carry, index):
        state, level = carry
        weights, level, extra = book(state, level)
        state, out = env_step(panel, env, state, weights)
        # The episode's last hold: close the book out at its close, charged as any trade.
        closing = (index == length - 1).astype(jnp.float32)
        grown = 1.0 + out.portfolio_return
        exit_cost = closing * jnp.sum(trade_cost(-state.weights, env.cost_bps, env.impact)) * grown
        exit_turnover = closing * jnp.sum(jnp.abs(state.weights)) * grown
        record = {"return": out.portfolio_return - exit_cost, "turnover": out.turnover + exit_turnover,
                  "costs": out.costs + exit_cost, **extra}
        return (state, level), record

    carry = (start, jnp.zeros((env.n_assets,), jnp.float32))
    _, record = jax.lax.scan(rebalance, carry, jnp.arange(env.episode_rebalances))
    return record, start.assets


def _over_calendar(book, panel, config, keys, starts, lengths):
    """``book`` vmapped over the ``G`` episodes and the ``P`` portfolios: ``(P, G, ...)``."""
    episodes = jax.vmap(lambda k, t, n: _calendar_episode(book, panel, config, k, t, n))
    return jax.vmap(episodes, in_axes=(0, None, None))(keys, starts, lengths)


@functools.partial(jax.jit, static_argnames=("config",))
def _agent_rollouts(params: QuantileNetwork, panel: MarketPanel, allowed: Bool[Array, "T A"], keys: PRNGKeyArray,
                    starts: Int[Array, " G"], lengths: Int[Array, " G"], *, config: AgentTrainConfig):
    """The greedy agent, trading only the ``allowed`` (row, asset) pairs, over the calendar."""
    levels = config.levels

    def agent(state, level):
        cvar = _scores(params, _observe(panel, state, level), config.qrdqn.alpha)  # (K, A)
        greedy = levels[jnp.argmax(cvar, axis=-1)]
        gate = allowed[state.t, state.assets]  # (K,)
        weights = _gated_allocation(_book_score(cvar), gate, config)
        extra = {"non_flat": jnp.mean((greedy != 0).astype(jnp.float32)),
                 "traded": jnp.mean(gate.astype(jnp.float32)), "active": jnp.any(gate).astype(jnp.float32)}
        return weights, greedy, extra

    return _over_calendar(agent, panel, config, keys, starts, lengths)


@functools.partial(jax.jit, static_argnames=("config",))
def _reference_rollouts(panel: MarketPanel, keys: PRNGKeyArray, starts: Int[Array, " G"], lengths: Int[Array, " G"],
                        *, config: AgentTrainConfig):
    """The equal-weight long book and the momentum book over the calendar."""
    env = config.env

    def equal_weight(state, level):
        return jnp.full((env.n_assets,), 1.0 / env.n_assets, jnp.float32), level, {}

    def momentum(state, level):
        signal = env_observe(panel, state)[:, config.momentum_feature]
        weights = soft_allocation(signal, temperature=config.momentum_temperature, net_exposure=env.net_exposure,
                                  gross_leverage=env.gross_leverage)
        return weights, level, {}

    return {"equal_weight": _over_calendar(equal_weight, panel, config, keys, starts, lengths),
            "momentum": _over_calendar(momentum, panel, config, keys, starts, lengths)}


def _summary(record: dict[str, Array], calendar: _Calendar, stamps: np.ndarray | None,
             config: AgentTrainConfig) -> dict[str, Any]:
    """The fund's dated P&L and its statistics from ``(P, G, n)`` records."""
    total = len(calendar.rows)

    def dated(name):  # (P, S): the episodes' rebalances in calendar order, padding dropped
        values = np.asarray(record[name], np.float64)
        return values.reshape(values.shape[0], -1)[:, :total]

    portfolios = dated("return")
    ends = calendar.rows + config.env.holding
    net, turnover, costs = portfolios.mean(axis=0), dated("turnover").mean(axis=0), dated("costs").mean(axis=0)
    pnl = pd.DataFrame({"timestamp": ends if stamps is None else np.asarray(stamps)[ends], "net": net,
                        "gross": net + costs, "turnover": turnover, "cost": costs})
    out = {"pnl": pnl, "portfolio_returns": portfolios,
           **summarise_returns(pnl, config.periods_per_year, config.confidence),
           "mean_return": float(net.mean()), "hit_rate": float(np.mean(net > 0))}
    for name in ("non_flat", "traded", "active"):
        if name in record:
            out[f"{name}_fraction"] = float(dated(name).mean())
    return out


def _prepare(panel, params, config, first, last, key, n_portfolios):
    if n_portfolios < 1:
        raise ValueError(f"n_portfolios must be >= 1, got {n_portfolios}")
    _check_width(panel, params.config.obs_dim)
    calendar = _calendar(panel, config, first, last)
    keys = jax.random.split(key, (n_portfolios, len(calendar.starts)))
    return calendar, keys, jnp.asarray(calendar.starts), jnp.asarray(calendar.lengths)


def evaluate_agent(
    panel: MarketPanel,
    params: QuantileNetwork,
    config: AgentTrainConfig,
    *,
    first: int,
    last: int,
    key: PRNGKeyArray,
    n_portfolios: int,
    stamps: np.ndarray | None = None,
) -> dict[str, Any]:
    """The greedy agent (epsilon 0) beside an equal-weight long book and a momentum book, each a
    fund of ``n_portfolios`` portfolios trading the rebalance calendar of rows ``[first, last]``
    (the fresh period: ``first`` = the fence row + the embargo), on the same assets and dates.

    Args:
        panel: the market panel.
        params: the trained online network (``AgentState.params``).
        config: the configuration it was trained with.
        first: the first rebalance row.
        last: the last row a hold may end on.
        key: the draw of the portfolios' assets; the same key gives the same results.
        n_portfolios: ``P``, portfolios of each fund.
        stamps: ``(T,)`` the panel's timestamps (:func:`market_panel`'s); default the row numbers.

    Returns:
        ``{"agent", "equal_weight", "momentum"}``, each ``{"pnl": DataFrame of S rows (timestamp at
        the end of the hold, net, gross, turnover, cost, per unit of the fund's capital),
        "portfolio_returns": (P, S), "mean_return", "hit_rate" (share of positive dates)}`` and
        :func:`chaosfm.evaluate.summarise_returns` of the pnl (``days``, ``sharpe`` annualised,
        ``sharpe_se``, ``sharpe_ci``, ``psr``, ``total_return``, ``annual_return``,
        ``max_drawdown``, ``turnover`` a year, ``costs`` in all); the agent's also
        ``non_flat_fraction`` (its greedy per-asset actions that are not flat). And ``"rows"``
        ``(S,)`` the rebalance rows, ``"assets"`` ``(P, G, K)`` each episode's assets, and
        ``"periods_per_year"``. A Sharpe statistic that cannot be computed is None.

    Raises:
        ValueError: ``n_portfolios < 1``, a critic of the wrong width, or rows that hold no
            rebalance or an episode without ``K`` valid assets.
    """
    calendar, keys, starts, lengths = _prepare(panel, params, config, first, last, key, n_portfolios)
    everywhere = jnp.ones(panel.valid.shape, bool)
    records, assets = {}, {}
    records["agent"], assets["agent"] = _agent_rollouts(params, panel, everywhere, keys, starts, lengths,
                                                        config=config)
    for name, (record, drawn) in _reference_rollouts(panel, keys, starts, lengths, config=config).items():
        records[name], assets[name] = record, drawn
    drawn = np.asarray(assets["agent"])
    for name in STRATEGIES[1:]:  # one draw per key and row: every book trades the same assets
        assert np.array_equal(drawn, np.asarray(assets[name]))
    result: dict[str, Any] = {name: _summary(records[name], calendar, stamps, config) for name in STRATEGIES}
    result["agent"] = {k: v for k, v in result["agent"].items() if k not in ("traded_fraction", "active_fraction")}
    return {**result, "rows": calendar.rows, "assets": drawn, "periods_per_year": config.periods_per_year}


def _gated(params, panel, config, convergence, threshold, first, last, key, n_portfolios, stamps):
    calendar, keys, starts, lengths = _prepare(panel, params, config, first, last, key, n_portfolios)
    allowed = jnp.asarray(convergence >= threshold)  # NaN compares False: unknown is not traded
    record, _ = _agent_rollouts(params, panel, allowed, keys, starts, lengths, config=config)
    return _summary(record, calendar, stamps, config)


def evaluate_gate(
    panel: MarketPanel,
    params: QuantileNetwork,
    config: AgentTrainConfig,
    *,
    convergence: Float[np.ndarray, "T A"],
    thresholds: Sequence[float],
    first: int,
    last: int,
    train_first: int,
    train_last: int,
    key: PRNGKeyArray,
    n_portfolios: int,
    stamps: np.ndarray | None = None,
) -> dict[str, Any]:
    """The agent trading only where ``convergence`` is at least a threshold, for each threshold on the
    training calendar ``[train_first, train_last]`` and on the fresh one ``[first, last]``; the
    threshold of the highest training Sharpe ratio is chosen.

    The fresh runs use :func:`evaluate_agent`'s draws (same ``key``, rows and ``n_portfolios``), so
    a threshold that gates nothing reproduces its agent exactly.

    Args:
        panel, params, config, first, last, key, n_portfolios, stamps: as :func:`evaluate_agent`.
        convergence: ``(T, A)`` the score on the panel's rows and assets; NaN where unknown (never
            traded). It must be causal: row ``t`` known at the close of row ``t``.
        thresholds: the thresholds tried, in order (a tie goes to the first).
        train_first: the first rebalance row of the training calendar.
        train_last: the last row a training hold may end on (the fence row).

    Returns:
        ``{"chosen_threshold": float or None (no threshold has a training Sharpe ratio),
        "thresholds": [{"threshold", "chosen", "train": summary, "fresh": summary}]}``, a summary
        being :func:`evaluate_agent`'s agent entry with ``traded_fraction`` (the (portfolio,
        asset, rebalance) triples allowed to trade) and ``active_fraction`` (the (portfolio,
        rebalance) pairs with at least one asset allowed).

    Raises:
        ValueError: ``convergence`` is not ``(T, A)``, no threshold is given, or as
            :func:`evaluate_agent`.
    """
    convergence = np.asarray(convergence, np.float64)
    if convergence.shape != tuple(panel.valid.shape):
        raise ValueError(f"convergence must have the panel's shape (T, A) = {tuple(panel.valid.shape)}, got "
                         f"{convergence.shape}")
    if not len(thresholds):
        raise ValueError("thresholds: give at least one")
    entries = []
    for threshold in thresholds:
        train = _gated(params, panel, config, convergence, threshold, train_first, train_last, key, n_portfolios,
                       stamps)
        fresh = _gated(params, panel, config, convergence, threshold, first, last, key, n_portfolios, stamps)
        entries.append({"threshold": float(threshold), "chosen": False, "train": train, "fresh": fresh})
    train_sharpes = [-math.inf if e["train"]["sharpe"] is None else e["train"]["sharpe"] for e in entries]
    chosen = None
    if max(train_sharpes) > -math.inf:
        best = int(np.argmax(train_sharpes))  # the first of equals
        entries[best]["chosen"] = True
        chosen = entries[best]["threshold"]
    return {"chosen_threshold": chosen, "thresholds": entries}
