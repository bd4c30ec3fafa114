"""How the backtest sizes positions and charges trades: :class:`BacktestSettings` and the rules.

A rule maps the forecasts of one model to positions: ``rule(signals, settings) -> (W,)`` fractions
of capital (long > 0). ``signals`` has one row per instrument and origin: ``instrument``,
``origin``, ``last`` (the entry close, from the data), ``mean``, ``median`` and the quantile
columns (``"0.1"``, ...) of the forecast price ``holding`` rows ahead; their ratios to ``last``
minus one are the forecast's mean, median and quantiles of the return over the hold.

A rule that sizes each instrument alone gives each of the ``N`` instruments a sleeve of ``1/N`` of
the capital; ``long_short`` sizes the whole book (gross exposure 1). Rules are looked up in
:data:`RULES`, the one registry.

Dimension letters: W windows (one per instrument and origin).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special


@dataclass(frozen=True)
class BacktestSettings:
    """How positions are sized, held and charged.

    Attributes:
        holding: rows a position is held, ``1 <= holding <= horizon``; None holds for the horizon.
        cost_bps: proportional cost, basis points of the capital traded (one way).
        impact: quadratic impact coefficient: ``impact * trade**2``, trade in fractions of capital.
        target_volatility: annualised volatility ``vol_target`` aims each sleeve at.
        max_leverage: cap on ``|position|`` of a sleeve for ``kelly`` and ``vol_target``.
        long_short_fraction: ``long_short`` goes long the top and short the bottom this fraction
            of the instruments (at least one each), in ``(0, 0.5]``.
        periods_per_year: rows per year of the data, to annualise (252 for daily closes).
    """

    holding: int | None = None
    cost_bps: float = 1.0
    impact: float = 0.0
    target_volatility: float = 0.10
    max_leverage: float = 2.0
    long_short_fraction: float = 0.5
    periods_per_year: float = 252.0

    def __post_init__(self) -> None:
        if self.holding is not None and self.holding < 1:
            raise ValueError(f"holding must be >= 1 row; got {self.holding}")
        for name in ("cost_bps", "impact"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("target_volatility", "max_leverage", "periods_per_year"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if not 0 < self.long_short_fraction <= 0.5:
            raise ValueError(f"long_short_fraction must lie in (0, 0.5]; got {self.long_short_fraction}")

    @property
    def holding_rows(self) -> int:
        """``holding``, once the backtest has resolved it against the forecasts' horizon."""
        if self.holding is None:
            raise ValueError("holding is not resolved: backtest() sets it from the forecasts' horizon")
        return self.holding

    def cost(self, trade: np.ndarray) -> np.ndarray:
        """Cost of trades ``(...)`` (signed fractions of capital), as a fraction of capital."""
        return trade_cost(trade, self.cost_bps, self.impact)


def trade_cost(trade: Any, cost_bps: float, impact: float) -> Any:
    """``cost_bps / 1e4 * |trade| + impact * trade**2`` elementwise, as a fraction of capital, for
    trades that are signed fractions of capital: the one cost formula of the backtest and the
    agents' environment. Written with Python's ``abs`` so it takes NumPy and (traced) JAX arrays."""
    size = abs(trade)
    return cost_bps * 1e-4 * size + impact * size**2


# ---------------------------------------------------------------------------------------------------
# Rules: (signals, settings) -> (W,) positions as fractions of capital.
#
# ``signals`` has one row per instrument and origin: ``instrument``, ``origin``, ``last`` (the
# entry close), ``mean``, ``median`` and the quantile columns (``"0.1"`` ...) of the forecast price
# ``holding`` rows ahead, whose ratios to ``last`` are quantiles of the return over the hold.

Rule = Callable[[pd.DataFrame, BacktestSettings], np.ndarray]


def _sleeve(signals: pd.DataFrame) -> float:
    """Capital per instrument for a rule that sizes each instrument alone."""
    return 1.0 / signals["instrument"].nunique()


FLOAT32_RETURN = 1e-6
"""Forecasts are stored in float32 (seven significant digits): a forecast return smaller than this
is the rounding of a price forecast equal to the entry close (``last_value``), not a view."""


def _expected_return(signals: pd.DataFrame, column: str) -> np.ndarray:
    expected = signals[column].to_numpy(np.float64) / signals["last"].to_numpy(np.float64) - 1.0
    return np.where(np.abs(expected) < FLOAT32_RETURN, 0.0, expected)


def forecast_volatility(signals: pd.DataFrame) -> np.ndarray:
    """Standard deviation ``(W,)`` of the return over the hold, from the widest symmetric pair of
    quantile columns ``(q, 1 - q)``: ``(Q(1-q) - Q(q)) / (2 Phi^{-1}(1-q)) / last``, exact for a
    normal forecast and robust to fat sample tails.

    Raises:
        ValueError: the signals hold no symmetric pair of quantile levels.
    """
    levels = sorted(float(c) for c in signals.columns if is_quantile_column(c))
    pairs = [q for q in levels if q < 0.5 and any(abs(1 - q - p) < 1e-9 for p in levels)]
    if not pairs:
        raise ValueError(f"the forecasts need a symmetric pair of quantile levels (q, 1-q); they have {levels}")
    low = min(pairs)
    high = next(p for p in levels if abs(1 - low - p) < 1e-9)
    spread = signals[_name(high, signals)].to_numpy(np.float64) - signals[_name(low, signals)].to_numpy(np.float64)
    return spread / (2.0 * special.ndtri(high)) / signals["last"].to_numpy(np.float64)


def is_quantile_column(column: object) -> bool:
    """Whether a column of the forecasts table is a quantile level (``"0.1"``, ...)."""
    try:
        return 0 < float(str(column)) < 1
    except ValueError:
        return False


def _name(level: float, signals: pd.DataFrame) -> str:
    return next(c for c in signals.columns if is_quantile_column(c) and abs(float(c) - level) < 1e-9)


def _capped(size: np.ndarray, cap: float) -> np.ndarray:
    # A forecast with no spread is infinitely sure of itself: it gets the cap, in its direction.
    return np.clip(np.nan_to_num(size, nan=0.0, posinf=cap, neginf=-cap), -cap, cap)


def sign_median(signals: pd.DataFrame, settings: BacktestSettings) -> np.ndarray:
    """Long a sleeve when the forecast median of the price ``holding`` rows ahead is above the entry
    close, short when below, flat when equal."""
    return np.sign(_expected_return(signals, "median")) * _sleeve(signals)


def kelly(signals: pd.DataFrame, settings: BacktestSettings) -> np.ndarray:
    """Kelly's growth-optimal fraction for a small-return bet, ``mu / sigma^2`` (Thorp 2006),
    with ``mu`` the forecast mean return over the hold and ``sigma`` from the quantile spread
    (:func:`forecast_volatility`), capped at ``max_leverage`` per sleeve."""
    with np.errstate(divide="ignore", invalid="ignore"):
        size = _expected_return(signals, "mean") / forecast_volatility(signals) ** 2
    return _capped(size, settings.max_leverage) * _sleeve(signals)


def vol_target(signals: pd.DataFrame, settings: BacktestSettings) -> np.ndarray:
    """``sign(median return) * target_volatility / forecast volatility``, both annualised
    (``sigma * sqrt(periods_per_year / holding)``), capped at ``max_leverage`` per sleeve."""
    annual = forecast_volatility(signals) * np.sqrt(settings.periods_per_year / settings.holding_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.sign(_expected_return(signals, "median")) * settings.target_volatility / annual
    return _capped(size, settings.max_leverage) * _sleeve(signals)


def long_short(signals: pd.DataFrame, settings: BacktestSettings) -> np.ndarray:
    """At each origin, rank the instruments by forecast median return over the hold; long the top
    ``long_short_fraction`` (at least one), short as many at the bottom, equal weights, gross 1.
    An origin that fewer than two instruments share gets no position.

    Raises:
        ValueError: no origin is shared by two instruments (one asset, or calendars that differ).
    """
    expected = _expected_return(signals, "median")
    weights = np.zeros(len(signals))
    shared = 0
    for rows in signals.groupby("origin", sort=False).indices.values():
        if len(rows) < 2:
            continue
        shared += 1
        count = max(1, int(np.floor(len(rows) * settings.long_short_fraction)))
        # Ties rank by instrument order (a stable sort), so the same forecasts give the same book.
        order = rows[np.argsort(expected[rows], kind="stable")]
        weights[order[-count:]] = 0.5 / count
        weights[order[:count]] = -0.5 / count
    if not shared:
        names = sorted(signals["instrument"].unique())
        raise ValueError(
            f"long_short ranks instruments forecast at the same origin; no origin is shared by two "
            f"of {names}: evaluate several assets over one calendar"
        )
    return weights


RULES: dict[str, Rule] = {
    "sign_median": sign_median,
    "kelly": kelly,
    "vol_target": vol_target,
    "long_short": long_short,
}
"""Every trading rule by name: the one place rules are registered and looked up."""


def get_rule(name: str) -> Rule:
    """The rule called ``name``.

    Raises:
        ValueError: naming the unknown rule and listing the known ones.
    """
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}")
    return RULES[name]
