"""Trade the scored forecasts: positions from a rule, held a few rows, a daily P&L after costs.

``backtest(forecasts, closes, rules, settings)`` reads the long forecasts table of
:class:`ForecastTable` (one row per model, asset, origin, step and column) and the closes of the
data the forecasts were scored on. For every model, rule and forecast origin:

* the position is taken at the close of the last context row (the close before the origin, the
  forecast's first target timestamp), read from ``closes``, never from the forecasts;
* it is held over the next ``holding`` rows of the data (``holding <= horizon``) and closed at the
  close of the last of them;
* every trade is charged ``cost_bps / 1e4 * |trade| + impact * trade**2`` (a proportional fee and
  spread, and a quadratic market-impact proxy as in Almgren & Chriss 2000).

Units: positions are fractions of the strategy's capital (see :mod:`._backtest_rules`). A row's
gross P&L is ``position * simple return of the row``: weights are held constant, a daily
rebalance whose cost is ignored. When holds overlap (origins closer than ``holding`` rows), each
tranche is scaled by ``1/k``, ``k`` the most tranches any instrument of the model holds at once, so
the book keeps the rule's gross exposure (the overlapping portfolios of Jegadeesh & Titman 1993).

Rows: per instrument, every data row a position is held over (the strategy's days in the market).
A row's ``position`` is what was held into its close (it earns the row's return), its ``turnover``
and ``cost`` what was traded at its close; the entry trade at the close before a hold from flat is
charged on the hold's first row, so a flat day never enters the statistics. The portfolio (``asset == "portfolio"``) sums the instruments per timestamp
(``position`` is then the net exposure). A row's ``window_class`` is the most leaked class of the
forecasts it trades on (``in_sample`` over ``within_pretrain`` over ``fresh``): a day counts as
fresh only when every position on it comes from a fresh window.

Dimension letters: W windows (forecast origins), R rows of an instrument's data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chaosfm._progress import progress
from chaosfm.data import DataError
from chaosfm.evaluate._backtest_rules import BacktestSettings, get_rule, is_quantile_column
from chaosfm.evaluate._protocol import CLASSES

PORTFOLIO = "portfolio"
"""The ``asset`` of a strategy's whole-book rows in the P&L table."""

PNL_COLUMNS = ("strategy", "model", "rule", "asset", "timestamp", "position", "gross", "turnover", "cost", "net",
               "window_class")

_LEAKED = {name: rank for rank, name in enumerate(reversed(CLASSES))}
"""fresh 0 < within_pretrain 1 < in_sample 2: the larger, the more of the window was seen."""
_CLASS_OF_RANK = np.array(list(reversed(CLASSES)), dtype=object)

_NEEDED = ("dataset", "asset", "model", "origin", "step", "timestamp", "column", "window_class", "observed",
           "mean", "median")


def strategy_name(model: str, rule: str) -> str:
    """``"garch/sign_median"``: a strategy is a model traded by a rule."""
    return f"{model}/{rule}"


def backtest(
    forecasts: pd.DataFrame,
    closes: pd.DataFrame,
    rules: Sequence[str],
    settings: BacktestSettings | None = None,
    models: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The daily P&L of every model traded by every rule, per instrument and for the portfolio.

    Args:
        forecasts: the forecasts table (``forecasts.parquet``: ``dataset, asset, model, origin, step,
            timestamp, column, window_class, observed, mean, median`` and quantile columns) of
            market closes (``column == "close"``).
        closes: ``dataset, asset, timestamp, close``: every row of the data the forecasts were
            scored on, each asset sorted by timestamp.
        rules: names in :data:`RULES`.
        settings: holding, costs and sizing; default :class:`BacktestSettings`.
        models: the models to trade; default every model of ``forecasts``.

    Returns:
        One row per strategy, asset (or ``"portfolio"``) and timestamp: :data:`PNL_COLUMNS`, money
        columns in fractions of capital, ``timestamp`` as in the data.

    Raises:
        ValueError: a rule, model or column is unknown, or ``holding`` exceeds the horizon.
        DataError: the forecasts do not match ``closes`` (an origin not in the data, or a close
            that differs from the one the forecast was scored against).
    """
    settings = settings or BacktestSettings()
    missing = [c for c in _NEEDED if c not in forecasts.columns]
    if missing:
        raise ValueError(f"the forecasts table lacks column(s) {missing}")
    columns = sorted(set(forecasts["column"]))
    if columns != ["close"]:
        raise ValueError(f"a backtest trades market closes (column 'close'); these forecasts are of {columns}")
    chosen = [get_rule(name) for name in rules]
    names = list(dict.fromkeys(forecasts["model"])) if models is None else list(models)
    unknown = [m for m in names if m not in set(forecasts["model"])]
    if unknown:
        raise ValueError(f"model(s) {unknown} are not in the forecasts; they hold {sorted(set(forecasts['model']))}")
    horizon = int(forecasts["step"].max())
    holding = horizon if settings.holding is None else settings.holding
    if holding > horizon:
        raise ValueError(f"holding {holding} exceeds the forecasts' horizon {horizon}: hold at most {horizon} rows")
    settings = dataclasses.replace(settings, holding=holding)
    prices = _prices(closes)
    labels = instrument_labels(forecasts)
    tables = []
    for model in progress(names, "backtest: models"):
        signals = _signals(forecasts[forecasts["model"] == model], prices, labels, holding)
        overlap = _max_overlap(signals, prices, holding)
        for rule_name, rule in zip(rules, chosen):
            weights = rule(signals, settings) / overlap
            tables.append(_strategy_pnl(signals, weights, prices, settings).assign(
                strategy=strategy_name(model, rule_name), model=model, rule=rule_name))
    return pd.concat(tables, ignore_index=True)[list(PNL_COLUMNS)]


def instrument_labels(forecasts: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(dataset, asset) -> label``: the asset's name, or ``dataset:asset`` when two datasets
    share an asset name."""
    pairs = list(dict.fromkeys(zip(forecasts["dataset"].astype(str), forecasts["asset"].astype(str))))
    assets = [asset for _, asset in pairs]
    return {(d, a): a if assets.count(a) == 1 else f"{d}:{a}" for d, a in pairs}


def _prices(closes: pd.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, pd.Series]]:
    """``(dataset, asset) -> (timestamps as int64 ns, closes float64, timestamps as given)``."""
    out = {}
    for (dataset, asset), part in closes.groupby(["dataset", "asset"], sort=False):
        stamps = pd.to_datetime(part["timestamp"]).reset_index(drop=True)
        values = stamps.to_numpy("datetime64[ns]").astype(np.int64)
        if np.any(np.diff(values) <= 0):
            raise DataError("timestamps must increase within an asset", source=str(dataset), rule="sorted timestamps")
        out[(str(dataset), str(asset))] = (values, part["close"].to_numpy(np.float64), stamps)
    return out


def _signals(rows: pd.DataFrame, prices: dict, labels: dict, holding: int) -> pd.DataFrame:
    """One row per instrument and origin of one model: the forecast ``holding`` rows ahead, the
    entry close and row from the data, and the window's class."""
    ahead = rows[rows["step"] == holding]
    parts = []
    for (dataset, asset), part in ahead.groupby(["dataset", "asset"], sort=False):
        key = (str(dataset), str(asset))
        if key not in prices:
            raise DataError(f"no closes of asset {asset!r} to trade its forecasts", source=str(dataset),
                            rule="forecasts match the data")
        stamps, close, _ = prices[key]
        origin = pd.to_datetime(part["origin"]).to_numpy("datetime64[ns]").astype(np.int64)
        found = np.searchsorted(stamps, origin)
        inside = (found < len(stamps)) & (found > 0)
        bad = ~inside | (stamps[np.minimum(found, len(stamps) - 1)] != origin)
        if bad.any():
            raise DataError(f"forecast origin {part['origin'].iloc[int(np.argmax(bad))]} of asset {asset!r} has no "
                            "row of the data with a close before it", source=str(dataset),
                            rule="forecasts match the data")
        entry = found - 1
        exit_row = entry + holding
        target = pd.to_datetime(part["timestamp"]).to_numpy("datetime64[ns]").astype(np.int64)
        observed = part["observed"].to_numpy(np.float64)
        # float32 in the table: seven digits. A larger difference means other data than was scored.
        mismatch = (exit_row >= len(stamps)) | (stamps[np.minimum(exit_row, len(stamps) - 1)] != target)
        mismatch |= ~np.isclose(close[np.minimum(exit_row, len(stamps) - 1)], observed, rtol=1e-5)
        if mismatch.any():
            at = int(np.argmax(mismatch))
            raise DataError(f"the close of asset {asset!r} at {part['timestamp'].iloc[at]} differs from the one its "
                            "forecast was scored against: the data changed since the evaluation",
                            source=str(dataset), rule="forecasts match the data")
        quantiles = [c for c in part.columns if is_quantile_column(c)]
        parts.append(pd.DataFrame({
            "key": [key] * len(part), "instrument": labels[key], "origin": part["origin"].to_numpy(),
            "entry": entry, "last": close[entry], "mean": part["mean"].to_numpy(np.float64),
            "median": part["median"].to_numpy(np.float64),
            **{q: part[q].to_numpy(np.float64) for q in quantiles},
            "leaked": part["window_class"].map(_LEAKED).to_numpy(),
        }))
    signals = pd.concat(parts, ignore_index=True)
    if signals["leaked"].isna().any():
        raise ValueError(f"window_class must be one of {list(CLASSES)}")
    return signals


def _max_overlap(signals: pd.DataFrame, prices: dict, holding: int) -> int:
    """The most tranches any instrument holds at once (1 when holds do not overlap)."""
    most = 1
    for key, part in signals.groupby("key", sort=False):
        live = np.zeros(len(prices[key][0]) + holding + 2, dtype=np.int64)
        np.add.at(live, part["entry"].to_numpy() + 1, 1)
        np.add.at(live, part["entry"].to_numpy() + 1 + holding, -1)
        most = max(most, int(np.cumsum(live).max()))
    return most


def _spans(entries: np.ndarray, start: int, stop: int, n_rows: int, values: np.ndarray | None = None) -> np.ndarray:
    """``(R,)`` sum over windows of ``values`` (default 1) on rows ``entry + start .. entry + stop - 1``."""
    diff = np.zeros(n_rows + stop + 1)
    ones = np.ones(len(entries)) if values is None else values
    np.add.at(diff, entries + start, ones)
    np.add.at(diff, entries + stop, -ones)
    return np.cumsum(diff)[:n_rows]


def _strategy_pnl(signals: pd.DataFrame, weights: np.ndarray, prices: dict,
                  settings: BacktestSettings) -> pd.DataFrame:
    holding = settings.holding_rows
    frames = []
    for key, rows in signals.groupby("key", sort=False).indices.items():
        stamps, close, given = prices[key]
        n_rows = len(close)
        entries = signals["entry"].to_numpy()[rows]
        # Held into rows entry+1 .. entry+holding; the entry close opens the hold, the last row closes it.
        # Rounded: the running sum of +w and -w leaves 1e-17 where nothing is held.
        position = np.round(_spans(entries, 1, holding + 1, n_rows, weights[rows]), 12)
        held = _spans(entries, 1, holding + 1, n_rows) > 0
        covered = _spans(entries, 0, holding + 1, n_rows) > 0
        leaked = signals["leaked"].to_numpy()[rows]
        rank = np.full(n_rows, -1)
        for level in range(len(CLASSES)):
            touched = _spans(entries[leaked == level], 0, holding + 1, n_rows) > 0
            rank[touched] = level
        change = np.zeros(n_rows)
        change[1:] = close[1:] / close[:-1] - 1.0
        trade = np.append(position[1:], 0.0) - position  # traded at this row's close
        gross = position * change
        turnover = np.abs(trade)
        cost = settings.cost(trade)
        # An entry from flat is traded at a close no position is held into: book it on the next row,
        # the first of the hold (an entry row is never the data's last: the hold follows it).
        opening = np.flatnonzero(covered & ~held)
        np.add.at(turnover, opening + 1, turnover[opening])
        np.add.at(cost, opening + 1, cost[opening])
        keep = np.flatnonzero(held)
        frames.append(pd.DataFrame({
            "asset": signals["instrument"].iloc[rows[0]], "timestamp": given.iloc[keep].to_numpy(),
            "position": position[keep], "gross": gross[keep], "turnover": turnover[keep],
            "cost": cost[keep], "net": gross[keep] - cost[keep], "leaked": rank[keep],
        }))
    assets = pd.concat(frames, ignore_index=True)
    book = assets.groupby("timestamp", sort=True).agg(
        position=("position", "sum"), gross=("gross", "sum"), turnover=("turnover", "sum"), cost=("cost", "sum"),
        net=("net", "sum"), leaked=("leaked", "max")).reset_index().assign(asset=PORTFOLIO)
    table = pd.concat([assets, book], ignore_index=True)
    table["window_class"] = _CLASS_OF_RANK[table.pop("leaked").to_numpy()]
    return table
