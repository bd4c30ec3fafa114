"""A cross-sectional trading environment: episodes of ``K`` assets drawn from a market panel,
rebalanced every ``holding`` rows, charged the backtest's costs. Pure JAX over NamedTuples, so it
jits, scans and vmaps over portfolios.

:func:`market_panel` turns a long market frame (close-only is enough) into a :class:`MarketPanel`
on the union of the assets' dates: simple returns, a validity mask and causal per-asset features
(log returns over 1, 5 and 20 rows and the 20-row realized volatility of
:func:`chaosfm.data.candle_features`), each standardised by its mean and standard deviation over
every asset and the rows up to ``fit_end`` only, never over the rows an agent is evaluated on.

An episode (:func:`env_reset`) starts at a row ``s`` and rebalances at the closes of rows
``s, s + h, ..., s + (n - 1) h`` (``h = holding``, ``n = episode_rebalances``); its last hold ends
at row ``s + n h``. It touches exactly the rows ``s .. s + n h``, all inside ``[first, last]``, and
draws only assets valid on every one of them. A training run passes ``last`` = the fence row; an
evaluation passes ``first`` = the fence row + the embargo: no episode crosses the fence.
:func:`env_reset_at` starts an episode at a given row instead (a calendar evaluation's).

At each rebalance (:func:`env_step`) the book trades from its current weights to the target
weights at the close of row ``t`` and then buys and holds through rows ``t+1 .. t+h``: the weights
drift with the assets' returns (the cash, ``1 - sum(w)``, earns nothing), so the hold's return is
exactly ``w . R`` with ``R`` each asset's compounded return over the hold, and no trade is made
that is not charged. (The backtest holds weights constant instead, an uncharged daily rebalance;
the two agree for ``h = 1``.) A trade ``d = w_target - w_drifted`` costs, as in the backtest
(:meth:`chaosfm.evaluate.BacktestSettings.cost`), ``sum(cost_bps / 1e4 * |d| + impact * d**2)``
of the capital: a proportional fee and a quadratic impact proxy (Almgren & Chriss 2000). The
positions still open at the end of an episode are not liquidated (no exit cost is charged).

Under ``jax.jit``, pass the panel as an argument rather than closing over it: a closed-over panel
is a constant the compiler folds, slowly.

Dimension letters: T rows (dates of the panel), A assets of the panel, K assets per portfolio,
F features per asset, E extra features per asset, B portfolios (a leading axis added by vmap).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm.data import as_timestamp_like, candle_features
from chaosfm.data import assets as asset_names
from chaosfm.evaluate import trade_cost

__all__ = [
    "EnvConfig",
    "EnvState",
    "MarketPanel",
    "StepOutput",
    "eligible_starts",
    "env_observe",
    "env_reset",
    "env_reset_at",
    "env_step",
    "market_panel",
]


class MarketPanel(NamedTuple):
    """The arrays an environment reads; dates and asset names stay outside (see :func:`market_panel`).

    Attributes:
        returns: ``(T, A)`` simple return of each asset from row ``t-1`` to row ``t``; 0 where
            undefined (no close at ``t`` or ``t-1``).
        valid: ``(T, A)`` the return and every feature of the asset are defined at row ``t``.
        features: ``(T, A, F)`` what is known of each asset at the close of row ``t``; 0 where
            not ``valid``.
    """

    returns: Float[Array, "T A"]
    valid: Bool[Array, "T A"]
    features: Float[Array, "T A F"]


def market_panel(
    frame: pd.DataFrame,
    *,
    fit_end: Any,
    extra: Float[np.ndarray, "T A E"] | None = None,
    return_windows: tuple[int, ...] = (1, 5, 20),
    vol_window: int = 20,
    holiday_rows: int = 5,
) -> tuple[MarketPanel, np.ndarray, list[str]]:
    """A :class:`MarketPanel` of a validated market frame (close-only is enough).

    Features, in order: the log return over each of ``return_windows`` rows of the union calendar
    (undefined when the close at either end is missing), then ``realized_vol`` of
    :func:`chaosfm.data.candle_features` (over the asset's own last ``vol_window`` rows), each
    standardised by its mean and standard deviation pooled over every asset and the rows at or
    before ``fit_end``, then ``extra`` as given.

    Args:
        frame: a validated market frame, one or several assets.
        fit_end: the last timestamp the standardisation may see (a training fence's cutoff).
        extra: ``(T, A, E)`` more per-asset features on the panel's rows and assets (e.g. a frozen
            encoder's embeddings), appended unscaled and carried over holiday rows as the closes.
            They must be causal (row ``t`` computed from rows ``<= t``) and fitted at or before ``fit_end``; a non-finite value makes the asset
            invalid at that row.
        return_windows: rows of each log-return feature.
        vol_window: rows of the realized-volatility window.
        holiday_rows: an asset's run of at most this many missing rows between two of its closes
            (its market's holidays on the union calendar of markets with other holidays) carries
            its last close and features forward: a return of 0 on those rows and the whole move
            on the next close, and the asset stays valid; a longer run (a suspension, missing
            data) makes it invalid there, as before its first row and after its last.

    Returns:
        The panel, its ``(T,)`` timestamps (the sorted union of the assets' dates) and its ``A``
        asset names (in order of first appearance).

    Raises:
        ValueError: no row at or before ``fit_end`` has every feature defined, ``extra`` has the
            wrong shape, or a window is too short.
    """
    if holiday_rows < 0:
        raise ValueError(f"holiday_rows must be >= 0, got {holiday_rows}")
    if not return_windows or min(*return_windows, vol_window - 1) < 1:
        raise ValueError(f"return_windows must be >= 1 row each and vol_window >= 2, got {return_windows}, "
                         f"{vol_window}")
    if "asset" not in frame.columns:
        frame = frame.assign(asset="asset")
    names = asset_names(frame)
    close = frame.pivot(index="timestamp", columns="asset", values="close")[names]  # (T, A), NaN where absent
    stamps = close.index
    candles = candle_features(frame, vol_window=vol_window)
    vol = candles.pivot(index="timestamp", columns="asset", values="realized_vol")
    vol = vol.reindex(index=stamps, columns=names).to_numpy(np.float64)
    close = close.to_numpy(np.float64)
    holiday = _holidays(np.isfinite(close), holiday_rows)  # (T, A)
    close, vol = _carried(close, holiday), _carried(vol, holiday)

    log_close = np.log(close)
    raw = []
    for window in return_windows:
        moved = np.full_like(log_close, np.nan)
        moved[window:] = log_close[window:] - log_close[:-window]
        raw.append(moved)
    raw = np.stack([*raw, vol], axis=-1)  # (T, A, F)

    fit_rows = int(stamps.searchsorted(as_timestamp_like(fit_end, stamps[0]), side="right"))
    fitted = raw[:fit_rows].reshape(-1, raw.shape[-1])
    fitted = fitted[np.all(np.isfinite(fitted), axis=-1)]
    if len(fitted) == 0:
        raise ValueError(f"no row at or before fit_end={fit_end} has every feature defined (the first "
                         f"{max(*return_windows, vol_window)} rows of an asset are warm-up); move fit_end later")
    mean, std = fitted.mean(axis=0), np.maximum(fitted.std(axis=0), 1e-12)
    features = (raw - mean) / std

    simple = np.zeros_like(log_close)
    simple[1:] = np.expm1(log_close[1:] - log_close[:-1])
    if extra is not None:
        extra = np.asarray(extra, np.float64)
        if extra.ndim != 3 or extra.shape[:2] != log_close.shape:
            raise ValueError(f"extra must have shape (T, A, E) = ({len(stamps)}, {len(names)}, E), got {extra.shape}")
        extra = _carried(extra, holiday)
        features = np.concatenate([features, extra], axis=-1)
    valid = np.all(np.isfinite(features), axis=-1) & np.isfinite(simple)
    panel = MarketPanel(
        returns=jnp.asarray(np.where(np.isfinite(simple), simple, 0.0), jnp.float32),
        valid=jnp.asarray(valid),
        features=jnp.asarray(np.where(valid[..., None], features, 0.0), jnp.float32),
    )
    return panel, stamps.to_numpy(), names


def _holidays(present: np.ndarray, most: int) -> np.ndarray:
    """``(T, A)``: the missing rows that lie in a run of at most ``most`` between two present rows."""
    out = np.zeros_like(present)
    for column in range(present.shape[1]):
        rows = np.flatnonzero(present[:, column])
        for before, after in zip(rows[:-1], rows[1:]):
            if 1 < after - before <= most + 1:
                out[before + 1:after, column] = True
    return out


def _carried(values: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """``values`` with each holiday row holding the row before it (runs carried in order)."""
    out = values.copy()
    for row, column in zip(*np.nonzero(holiday)):  # row-major: a run's earlier rows are filled first
        out[row, column] = out[row - 1, column]
    return out


@dataclass(frozen=True)
class EnvConfig:
    """The shape of an episode and what trading costs; hashable, so it can be a static argument."""

    n_assets: int = 16  # K assets drawn per portfolio: the width of one cross-section
    holding: int = 5  # rows between rebalances; the horizon each decision is rewarded over
    episode_rebalances: int = 12  # decisions per episode; the episode spans holding * this rows
    cost_bps: float = 1.0  # proportional cost in basis points of the capital traded, as the backtest's
    impact: float = 0.0  # quadratic impact coefficient: impact * trade**2 per asset, as the backtest's
    net_exposure: float = 0.0  # sum(w) the allocation aims at (0 market neutral); the agent's to hold
    gross_leverage: float = 1.0  # cap on sum(|w|): env_step scales down any larger target

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}"
                    for name in ("n_assets", "holding", "episode_rebalances") if getattr(self, name) < 1]
        problems += [f"{name}: must be >= 0, got {getattr(self, name)}"
                     for name in ("cost_bps", "impact") if not getattr(self, name) >= 0]
        if not self.gross_leverage > 0:
            problems.append(f"gross_leverage: must be > 0, got {self.gross_leverage}")
        elif abs(self.net_exposure) > self.gross_leverage:
            problems.append(f"net_exposure: |{self.net_exposure}| exceeds gross_leverage {self.gross_leverage}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def episode_rows(self) -> int:
        """Rows from an episode's first rebalance to the end of its last hold."""
        return self.holding * self.episode_rebalances

    def replace(self, **changes: Any) -> "EnvConfig":
        return dataclasses.replace(self, **changes)


class EnvState(NamedTuple):
    """One portfolio between rebalances.

    Attributes:
        t: the row at whose close the next rebalance happens (int32).
        assets: ``(K,)`` the panel's column of each asset of the portfolio (int32, distinct).
        weights: ``(K,)`` the current weights, fractions of the capital, drifted by the last hold.
        step: rebalances done (int32).
    """

    t: Int[Array, ""]
    assets: Int[Array, " K"]
    weights: Float[Array, " K"]
    step: Int[Array, ""]


class StepOutput(NamedTuple):
    """What one rebalance and hold earned.

    Attributes:
        portfolio_return: the hold's return on the capital, net of ``costs``.
        asset_returns: ``(K,)`` each asset's compounded return over rows ``t+1 .. t+holding``.
        costs: the rebalance's cost, a fraction of the capital.
        turnover: ``sum(|w_target - w_drifted|)``, a fraction of the capital.
        done: the episode's last rebalance was this one.
    """

    portfolio_return: Float[Array, ""]
    asset_returns: Float[Array, " K"]
    costs: Float[Array, ""]
    turnover: Float[Array, ""]
    done: Bool[Array, ""]


def _windows(
    panel: MarketPanel, config: EnvConfig, first: int | Int[Array, ""], last: int | Int[Array, ""]
) -> tuple[Bool[Array, " T"], Bool[Array, "T A"]]:
    """Which rows can start an episode, and which assets are valid over the episode of each row."""
    rows = panel.valid.shape[0]
    span = config.episode_rows
    invalid_before = jnp.concatenate([jnp.zeros((1, panel.valid.shape[1]), jnp.int32),
                                      jnp.cumsum(~panel.valid, axis=0, dtype=jnp.int32)])  # (T+1, A)
    starts = jnp.arange(rows)
    ends = jnp.minimum(starts + span + 1, rows)  # one past the last row touched
    window_ok = invalid_before[ends] == invalid_before[starts]  # (T, A): no invalid row in s .. s + span
    inside = (starts >= first) & (starts + span <= last) & (starts + span < rows)
    return inside & (jnp.sum(window_ok, axis=1) >= config.n_assets), window_ok


def eligible_starts(
    panel: MarketPanel, config: EnvConfig, *, first: int | Int[Array, ""], last: int | Int[Array, ""]
) -> Bool[Array, " T"]:
    """``(T,)`` the rows an episode may start at: its rows ``s .. s + episode_rows`` lie in
    ``[first, last]`` and at least ``n_assets`` assets are valid on all of them."""
    return _windows(panel, config, first, last)[0]


def _concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def env_reset(
    panel: MarketPanel,
    config: EnvConfig,
    *,
    key: PRNGKeyArray,
    first: int | Int[Array, ""],
    last: int | Int[Array, ""],
) -> EnvState:
    """A new episode: a start row drawn uniformly from :func:`eligible_starts`, then ``K`` distinct
    assets drawn uniformly from those valid on every row the episode touches; flat weights.

    Args:
        panel: the market panel.
        config: the episode's shape.
        key: the draw's randomness.
        first: the first row the episode may touch (e.g. the fence row + the embargo).
        last: the last row the episode may touch (e.g. the fence row), inclusive.

    Raises:
        ValueError: no row can start an episode (checked outside ``jit`` and ``vmap``; a traced
            draw with no eligible row returns an arbitrary state: check :func:`eligible_starts`).
    """
    start_key, asset_key = jax.random.split(key)
    eligible, window_ok = _windows(panel, config, first, last)
    if _concrete(eligible) and not bool(jnp.any(eligible)):
        raise ValueError(f"no episode of {config.episode_rows + 1} rows with {config.n_assets} valid assets fits "
                         f"in rows [{first}, {last}] of a panel of {panel.valid.shape[0]} rows")
    t = jax.random.categorical(start_key, jnp.where(eligible, 0.0, -jnp.inf)).astype(jnp.int32)
    usable = window_ok[t].astype(jnp.float32)  # (A,)
    # Gumbel top-k: an asset of probability 0 is drawn only if fewer than K are usable, never here.
    chosen = jax.random.choice(asset_key, usable.shape[0], (config.n_assets,), replace=False,
                               p=usable / jnp.sum(usable))
    return EnvState(t, chosen.astype(jnp.int32), jnp.zeros((config.n_assets,), jnp.float32),
                    jnp.zeros((), jnp.int32))


def env_reset_at(
    panel: MarketPanel,
    config: EnvConfig,
    t: int | Int[Array, ""],
    *,
    key: PRNGKeyArray,
    rebalances: int | Int[Array, ""] | None = None,
) -> EnvState:
    """A new episode at a given row: its first rebalance at the close of row ``t``, ``K`` distinct
    assets drawn uniformly from those valid on every row ``t .. t + rebalances * holding``; flat
    weights. The same ``t`` and ``key`` give the same assets (a calendar evaluation trades every
    book from one shared draw).

    Args:
        panel: the market panel.
        config: the episode's shape.
        t: the row of the first rebalance.
        key: the draw of the assets.
        rebalances: rebalances the episode will make, which sets the rows its assets must be valid
            on (a calendar's last episode may be cut short); default ``episode_rebalances``. The
            state's ``done`` still comes from ``episode_rebalances``.

    Raises:
        ValueError: the rows run past the panel or fewer than ``K`` assets are valid on all of them
            (checked outside ``jit`` and ``vmap``; a traced draw returns an arbitrary state).
    """
    rebalances = config.episode_rebalances if rebalances is None else rebalances
    rows = panel.valid.shape[0]
    end = t + rebalances * config.holding  # the last row the episode touches
    invalid_before = jnp.concatenate([jnp.zeros((1, panel.valid.shape[1]), jnp.int32),
                                      jnp.cumsum(~panel.valid, axis=0, dtype=jnp.int32)])  # (T+1, A)
    usable = invalid_before[jnp.minimum(end + 1, rows)] == invalid_before[t]  # (A,) valid on t .. end
    if _concrete(usable) and _concrete(end):
        if int(end) >= rows or int(t) < 0 or int(jnp.sum(usable)) < config.n_assets:
            raise ValueError(f"no episode of rows [{int(t)}, {int(end)}] with {config.n_assets} valid assets in a "
                             f"panel of {rows} rows ({int(jnp.sum(usable))} assets valid on all of them)")
    usable = usable.astype(jnp.float32)
    chosen = jax.random.choice(key, usable.shape[0], (config.n_assets,), replace=False, p=usable / jnp.sum(usable))
    return EnvState(jnp.asarray(t, jnp.int32), chosen.astype(jnp.int32), jnp.zeros((config.n_assets,), jnp.float32),
                    jnp.zeros((), jnp.int32))


def env_observe(panel: MarketPanel, state: EnvState) -> Float[Array, "K F"]:
    """The features at row ``t`` of the portfolio's assets, known at the close the trade is made."""
    return panel.features[state.t, state.assets]


def env_step(
    panel: MarketPanel, config: EnvConfig, state: EnvState, target_weights: Float[Array, " K"]
) -> tuple[EnvState, StepOutput]:
    """Rebalance to ``target_weights`` at the close of row ``t`` and hold through row ``t + holding``
    (the accounting is in the module docstring).

    A target with ``sum(|w|) > gross_leverage`` is scaled down to it. With ``c`` the costs and
    ``R`` the asset returns, the return is ``w . R - c`` and the drifted weights are
    ``w (1 + R) / (1 - c + w . R)``.

    Returns:
        The state at the close of row ``t + holding`` and what the step earned.
    """
    target = jnp.asarray(target_weights, jnp.float32)
    gross = jnp.sum(jnp.abs(target))
    target = target * jnp.minimum(1.0, config.gross_leverage / jnp.maximum(gross, 1e-12))
    held = jax.lax.dynamic_slice_in_dim(panel.returns, state.t + 1, config.holding, axis=0)  # (holding, A)
    growth = jnp.prod(1.0 + held[:, state.assets], axis=0)  # (K,)
    asset_returns = growth - 1.0
    trade = target - state.weights
    turnover = jnp.sum(jnp.abs(trade))
    costs = jnp.sum(trade_cost(trade, config.cost_bps, config.impact))
    portfolio_return = jnp.dot(target, asset_returns) - costs
    # A book that lost all its capital has no weights to drift; keep the division finite.
    drifted = target * growth / jnp.maximum(1.0 + portfolio_return, 1e-6)
    step = state.step + 1
    new_state = EnvState(state.t + config.holding, state.assets, drifted, step)
    return new_state, StepOutput(portfolio_return, asset_returns, costs, turnover, step >= config.episode_rebalances)
