"""The statistics of a backtest: how good each strategy looks, and how much of that to believe.

Per strategy, on the portfolio's daily net returns (after costs), with every Sharpe ratio
annualised by ``sqrt(periods_per_year)``:

* the Sharpe ratio, its standard error (Lo 2002, with Mertens' 2002 correction for skewness and
  kurtosis) and the normal interval ``SR ± z SE``;
* PSR, the probability that the true Sharpe ratio is above 0 (Bailey & López de Prado 2012);
* DSR, the PSR against the Sharpe ratio the best of the ``N`` strategies tried (rules × models)
  would reach by luck (Bailey & López de Prado 2014);
* total return ``prod(1 + r) - 1``, annual return ``(1 + total)^(periods_per_year / T) - 1``, the
  largest drawdown of the equity ``prod(1 + r)`` from its running peak (starting from 1), the annual
  turnover ``sum |trade| * periods_per_year / T`` and the costs paid;
* the same statistics over the rows of each leakage class alone (``by_class``).

And one number for the set: PBO, the probability of backtest overfitting by combinatorially
symmetric cross-validation over the strategies (Bailey, Borwein, López de Prado & Zhu 2017).

Dimension letters: T rows (days a strategy is in the market), N strategies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.evaluate._backtest import PORTFOLIO
from chaosfm.evaluate._protocol import CLASSES
from chaosfm.evaluate._sharpe import (
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_confidence_interval,
    sharpe_ratio,
    sharpe_standard_error,
)


def strategy_returns(pnl: pd.DataFrame, column: str = "net") -> pd.DataFrame:
    """``(T, N)``: each strategy's portfolio ``column`` per timestamp, over the union of their
    timestamps, 0 where a strategy is out of the market."""
    book = pnl[pnl["asset"] == PORTFOLIO]
    wide = book.pivot(index="timestamp", columns="strategy", values=column)
    return wide.reindex(columns=list(dict.fromkeys(book["strategy"]))).fillna(0.0).sort_index()


def equity_curve(returns: np.ndarray) -> np.ndarray:
    """``(T + 1,)`` compounded equity of ``(T,)`` returns, starting at 1."""
    return np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns, dtype=np.float64))])


def drawdown(returns: np.ndarray) -> np.ndarray:
    """``(T + 1,)`` equity over its running peak minus 1 (``<= 0``), the first entry the start."""
    equity = equity_curve(returns)
    return equity / np.maximum.accumulate(equity) - 1.0


def _sharpe_family(returns: np.ndarray, periods_per_year: float, confidence: float) -> dict[str, Any]:
    """Annualised Sharpe ratio, SE, interval and PSR; None for each when the ratio is undefined
    (fewer than two rows, or returns that never change)."""
    scale = math.sqrt(periods_per_year)
    try:
        low, high = sharpe_confidence_interval(returns, confidence)
        return {
            "sharpe": sharpe_ratio(returns, periods_per_year),
            "sharpe_se": sharpe_standard_error(returns) * scale,
            "sharpe_ci": [low * scale, high * scale],
            "psr": probabilistic_sharpe_ratio(returns),
        }
    except ValueError:
        return {"sharpe": None, "sharpe_se": None, "sharpe_ci": [None, None], "psr": None}


def summarise_returns(rows: pd.DataFrame, periods_per_year: float = 252.0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """The statistics of one series of P&L rows (``net``, ``turnover``, ``cost``; time ordered)."""
    net = rows["net"].to_numpy(np.float64)
    days = len(net)
    if not days:
        return {"days": 0, **_sharpe_family(net, periods_per_year, confidence), "total_return": None,
                "annual_return": None, "max_drawdown": None, "turnover": None, "costs": None}
    total = float(np.prod(1.0 + net) - 1.0)
    return {
        "days": days,
        **_sharpe_family(net, periods_per_year, confidence),
        "total_return": total,
        # A book that lost everything has no growth rate to annualise.
        "annual_return": float((1.0 + total) ** (periods_per_year / days) - 1.0) if total > -1 else -1.0,
        "max_drawdown": float(drawdown(net).min()),
        "turnover": float(rows["turnover"].sum() * periods_per_year / days),
        "costs": float(rows["cost"].sum()),
    }


def backtest_statistics(pnl: pd.DataFrame, *, periods_per_year: float = 252.0, confidence: float = 0.95,
                        pbo_blocks: int = 16) -> dict[str, Any]:
    """Every strategy's statistics, per leakage class too, and the PBO of the set.

    Args:
        pnl: the table :func:`backtest` returns.
        periods_per_year: rows per year, to annualise.
        confidence: two-sided level of the Sharpe interval.
        pbo_blocks: CSCV blocks ``S`` (even); fewer when the rows do not fill that many.

    Returns:
        ``{"n_trials": N, "pbo": {"value", "n_blocks", "n_combinations"}, "strategies": {NAME:
        {"model", "rule", "days", "sharpe", "sharpe_se", "sharpe_ci", "psr", "dsr", "pbo",
        "total_return", "annual_return", "max_drawdown", "turnover", "costs", "assets": {ASSET:
        sharpe}, "by_class": {CLASS: {same statistics but dsr and pbo}}}}}``. A statistic that
        cannot be computed (too few rows, constant returns, one strategy for DSR and PBO) is None.
    """
    book = pnl[pnl["asset"] == PORTFOLIO].sort_values("timestamp", kind="stable")
    names = list(dict.fromkeys(book["strategy"]))
    trials = {}
    for name in names:
        try:
            trials[name] = sharpe_ratio(book.loc[book["strategy"] == name, "net"].to_numpy(np.float64))
        except ValueError:
            continue
    pbo = _pbo(strategy_returns(pnl), pbo_blocks)
    strategies: dict[str, Any] = {}
    for name in names:
        rows = book[book["strategy"] == name]
        entry: dict[str, Any] = {"model": rows["model"].iloc[0], "rule": rows["rule"].iloc[0]}
        entry.update(summarise_returns(rows, periods_per_year, confidence))
        entry["dsr"] = None
        if name in trials and len(trials) >= 2:
            entry["dsr"] = deflated_sharpe_ratio(rows["net"].to_numpy(np.float64),
                                                 trial_sharpe_ratios=list(trials.values()))
        entry["pbo"] = pbo["value"]
        assets = pnl[(pnl["strategy"] == name) & (pnl["asset"] != PORTFOLIO)]
        entry["assets"] = {
            str(asset): _sharpe_family(part["net"].to_numpy(np.float64), periods_per_year, confidence)["sharpe"]
            for asset, part in assets.groupby("asset", sort=False)
        }
        entry["by_class"] = {
            window_class: summarise_returns(rows[rows["window_class"] == window_class], periods_per_year, confidence)
            for window_class in CLASSES
        }
        strategies[name] = entry
    return {"n_trials": len(names), "pbo": pbo, "strategies": strategies}


def _pbo(returns: pd.DataFrame, blocks: int) -> dict[str, Any]:
    """PBO by CSCV over the ``(T, N)`` returns, with as many blocks as the rows allow (at most
    ``blocks``, each half at least two rows); None when there is one strategy or too few rows."""
    n_rows, n_strategies = returns.shape
    usable = min(blocks, n_rows - n_rows % 2)
    if n_strategies < 2 or usable < 2:
        return {"value": None, "n_blocks": None, "n_combinations": None}
    try:
        result = probability_of_backtest_overfitting(returns.to_numpy(np.float64), n_blocks=usable)
    except ValueError:  # a half of fewer than two rows
        return {"value": None, "n_blocks": None, "n_combinations": None}
    return {"value": result.pbo, "n_blocks": usable, "n_combinations": result.n_combinations}
