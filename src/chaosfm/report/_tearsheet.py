"""The backtest tearsheet: one HTML section a trader reads, every figure a PNG embedded in it.

For the set: a table of every strategy (Sharpe with its interval, PSR, DSR, returns, drawdown,
turnover, costs, the Sharpe ratio per leakage class) with the PBO of the set, and the equity curves
side by side. For each strategy: the equity curve with its drawdown underneath, the rolling Sharpe
ratio with its ± 1.96 SE band, monthly returns, the distribution of daily returns against the
fitted normal, and turnover and costs over time. Every plot over time shades the rows traded on
fresh forecasts (and, paler, within_pretrain ones): what the model never saw is the part to trust.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._progress import progress
from chaosfm.evaluate import PORTFOLIO, drawdown, equity_curve, sharpe_ratio, sharpe_standard_error
from chaosfm.report._html import _fmt, _img
from chaosfm.report._plots import CLASS_COLOURS, plt, to_png

_SHADED = ("fresh", "within_pretrain")
"""Classes shaded on every time plot (in_sample is the unshaded background)."""


def class_spans(timestamps: pd.Series, classes: pd.Series, window_class: str) -> list[tuple[Any, Any]]:
    """``(first, last)`` timestamps of each run of consecutive rows of ``window_class``."""
    marked = (classes.to_numpy() == window_class).astype(np.int8)
    edges = np.diff(np.concatenate([[0], marked, [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    stamps = timestamps.to_numpy()
    return [(stamps[a], stamps[b]) for a, b in zip(starts, stops)]


def _shade(axis: Any, rows: pd.DataFrame, label: bool = True) -> None:
    for window_class in _SHADED:
        for number, (first, last) in enumerate(class_spans(rows["timestamp"], rows["window_class"], window_class)):
            axis.axvspan(first, last, color=CLASS_COLOURS[window_class], alpha=0.15 if window_class == "fresh" else 0.07,
                         linewidth=0, label=window_class if number == 0 and label else None)


def _equity(axis: Any, rows: pd.DataFrame) -> None:
    stamps = rows["timestamp"]
    axis.plot(stamps, equity_curve(rows["net"])[1:], color="black", linewidth=1.0, label="net of costs")
    axis.plot(stamps, equity_curve(rows["gross"])[1:], color="#777777", linewidth=0.7, linestyle=":", label="gross")
    axis.axhline(1.0, color="#bbbbbb", linewidth=0.6)
    axis.set_ylabel("equity (start = 1)", fontsize=8)


def _drawdown(axis: Any, rows: pd.DataFrame) -> None:
    axis.fill_between(rows["timestamp"], drawdown(rows["net"])[1:] * 100, 0, color="#c0392b", alpha=0.5, linewidth=0)
    axis.set_ylabel("drawdown (%)", fontsize=8)


def rolling_sharpe(net: np.ndarray, window: int, periods_per_year: float,
                   z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Annualised Sharpe ratio ``(T - window + 1,)`` of each run of ``window`` rows ending at a row,
    and its half-band ``z SE`` (SE of Lo 2002 with Mertens' 2002 correction); NaN where the
    returns of a run never change.

    Raises:
        ValueError: fewer than ``window`` rows, or ``window < 3``.
    """
    net = np.asarray(net, dtype=np.float64)
    if window < 3 or len(net) < window:
        raise ValueError(f"a rolling Sharpe ratio of {window} rows needs window >= 3 and at least {window} rows; "
                         f"got {len(net)}")
    windows = np.lib.stride_tricks.sliding_window_view(net, window).T  # (window, T - window + 1)
    varying = windows.std(axis=0) > 0
    sharpe = np.full(windows.shape[1], np.nan)
    band = np.full(windows.shape[1], np.nan)
    if varying.any():
        sharpe[varying] = np.asarray(sharpe_ratio(windows[:, varying], periods_per_year))
        band[varying] = z * np.asarray(sharpe_standard_error(windows[:, varying])) * np.sqrt(periods_per_year)
    return sharpe, band


def _rolling(axis: Any, rows: pd.DataFrame, window: int, periods_per_year: float) -> None:
    if len(rows) < max(window, 3):
        axis.text(0.5, 0.5, f"fewer than {window} rows: no rolling Sharpe ratio", transform=axis.transAxes,
                  ha="center", va="center", fontsize=8)
        return
    sharpe, band = rolling_sharpe(rows["net"].to_numpy(np.float64), window, periods_per_year)
    stamps = rows["timestamp"].iloc[window - 1:]
    axis.fill_between(stamps, sharpe - band, sharpe + band, color="#7b3294", alpha=0.2, linewidth=0,
                      label="± 1.96 SE")
    axis.plot(stamps, sharpe, color="#7b3294", linewidth=0.9, label=f"Sharpe, last {window} rows")
    axis.axhline(0.0, color="black", linewidth=0.6)
    axis.set_ylabel("annualised Sharpe", fontsize=8)


def _turnover(axis: Any, rows: pd.DataFrame) -> None:
    axis.vlines(rows["timestamp"], 0, rows["turnover"], color="#555555", linewidth=0.8, label="turnover")
    axis.set_ylabel("turnover (× capital)", fontsize=8)
    twin = axis.twinx()
    twin.plot(rows["timestamp"], rows["cost"].cumsum() * 100, color="#e69f00", linewidth=1.0, label="cumulative costs")
    twin.set_ylabel("costs paid (%)", fontsize=8)
    twin.legend(fontsize=7, loc="upper right")


def over_time(rows: pd.DataFrame, title: str, window: int = 63, periods_per_year: float = 252.0) -> bytes:
    """One strategy over time, four panels on one time axis: equity (net and gross) with the
    drawdown underneath, the rolling Sharpe ratio with its ± 1.96 SE band, and the turnover traded
    with the cumulative costs. Fresh rows are shaded on each."""
    figure, axes = plt.subplots(4, 1, figsize=(10, 8.2), sharex=True, height_ratios=[2.2, 1, 1.5, 1.2])
    panels = (_equity, _drawdown, functools.partial(_rolling, window=window, periods_per_year=periods_per_year),
              _turnover)
    for number, (axis, draw) in enumerate(zip(axes, panels)):
        draw(axis, rows)
        _shade(axis, rows, label=number == 0)
        axis.tick_params(labelsize=7)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="upper left", ncol=4)
    axes[0].set_title(title)
    figure.tight_layout()
    return to_png(figure)


def _monthly(axis: Any, rows: pd.DataFrame) -> None:
    stamps = pd.to_datetime(rows["timestamp"]).reset_index(drop=True)
    table = monthly_table(rows)
    is_fresh = pd.Series((rows["window_class"] == "fresh").to_numpy())
    fresh = is_fresh.groupby([stamps.dt.year.rename("year"), stamps.dt.month.rename("month")]).any()
    fresh = fresh.unstack("month").reindex(index=table.index, columns=range(1, 13)).eq(True).to_numpy()
    values = table.to_numpy(np.float64)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    axis.imshow(values, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=5.5)
        if fresh[i, j]:
            axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=CLASS_COLOURS["fresh"],
                                         linewidth=1.5))
    axis.set_xticks(range(12), list("JFMAMJJASOND"), fontsize=7)
    axis.set_yticks(range(len(table)), [str(y) for y in table.index], fontsize=6.5)
    axis.set_title("net return per month (%); outlined: fresh", fontsize=9)


def monthly_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Compounded net return (%) per calendar month: one row per year, columns 1..12, NaN where
    the strategy did not trade."""
    stamps = pd.to_datetime(rows["timestamp"])
    growth = pd.Series(1.0 + rows["net"].to_numpy(np.float64))
    keys = [stamps.dt.year.rename("year").reset_index(drop=True), stamps.dt.month.rename("month").reset_index(drop=True)]
    table = (growth.groupby(keys).prod() - 1.0).unstack("month").reindex(columns=range(1, 13))
    return table * 100


def _distribution(axis: Any, rows: pd.DataFrame) -> None:
    net = rows["net"].to_numpy(np.float64) * 100
    axis.hist(net, bins=min(60, max(10, len(net) // 5)), density=True, color="#888888", alpha=0.7,
              label="daily net return")
    std = float(net.std(ddof=1)) if len(net) > 1 else 0.0
    if std > 0:
        mean = float(net.mean())
        grid = np.linspace(net.min(), net.max(), 200)
        axis.plot(grid, np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi)), color="#c0392b",
                  label=f"normal({mean:.3f}, {std:.3f})")
        centred = net - mean
        skew = np.mean(centred**3) / np.mean(centred**2) ** 1.5
        excess = np.mean(centred**4) / np.mean(centred**2) ** 2 - 3
        axis.set_title(f"daily returns: skewness {skew:.2f}, excess kurtosis {excess:.2f}", fontsize=9)
    axis.set_xlabel("net return (%)", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7)


def months_and_distribution(rows: pd.DataFrame) -> bytes:
    """Monthly returns (years down, months across; months with a fresh row outlined) beside the
    distribution of daily net returns against the normal of the same mean and standard deviation."""
    years = pd.to_datetime(rows["timestamp"]).dt.year.nunique()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, max(3.0, 0.8 + 0.22 * years)), width_ratios=[1.3, 1])
    _monthly(left, rows)
    _distribution(right, rows)
    figure.tight_layout()
    return to_png(figure)


def equity_overview(pnl: pd.DataFrame) -> bytes:
    """Every strategy's net equity on one chart, fresh rows shaded (from the first strategy's rows)."""
    book = pnl[pnl["asset"] == PORTFOLIO]
    figure, axis = plt.subplots(figsize=(10, 3.6))
    first = None
    for name, rows in book.groupby("strategy", sort=False):
        rows = rows.sort_values("timestamp")
        first = rows if first is None else first
        axis.plot(rows["timestamp"], equity_curve(rows["net"])[1:], linewidth=0.9, label=str(name))
    if first is not None:
        _shade(axis, first)
    axis.set_yscale("log")
    axis.set_ylabel("net equity (start = 1, log)")
    axis.legend(fontsize=6.5, ncol=3, loc="upper left")
    return to_png(figure)


_COLUMNS = ("days", "sharpe", "sharpe_ci", "sharpe_se", "psr", "dsr", "annual_return", "total_return",
            "max_drawdown", "turnover", "costs")


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return f"{_fmt(value[0])} – {_fmt(value[1])}" if value[0] is not None else "–"
    return _fmt(value)


def summary_table(statistics: Mapping[str, Any]) -> str:
    """One row per strategy: the statistics of the whole run, then the Sharpe ratio per class."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    classes = "".join(f"<th>sharpe {c}</th>" for c in ("fresh", "within_pretrain", "in_sample"))
    body = []
    for name, entry in statistics["strategies"].items():
        cells = "".join(f"<td>{_cell(entry.get(c))}</td>" for c in _COLUMNS)
        per_class = "".join(f"<td>{_fmt(entry['by_class'][c]['sharpe'])} ({entry['by_class'][c]['days']} d)</td>"
                            for c in ("fresh", "within_pretrain", "in_sample"))
        body.append(f'<tr><td class="name">{html.escape(name)}</td>{cells}{per_class}</tr>')
    return f"<table><tr><th>strategy</th>{head}{classes}</tr>{''.join(body)}</table>"


def tearsheet_section(pnl: pd.DataFrame, statistics: Mapping[str, Any], *, description: str = "",
                      periods_per_year: float = 252.0, rolling_window: int = 63,
                      detailed: Collection[str] | None = None, trials: str = "rules × models") -> str:
    """The backtest's ``report.html`` section.

    Args:
        pnl: the P&L table of :func:`chaosfm.evaluate.backtest`.
        statistics: :func:`chaosfm.evaluate.backtest_statistics` of it.
        description: one paragraph (HTML-escaped here) saying what was traded and at what cost.
        periods_per_year: rows per year, to annualise the rolling Sharpe ratio.
        rolling_window: rows of the rolling Sharpe ratio.
        detailed: the strategies drawn one by one (default every one); the others are in the
            table and the equity overview only (e.g. an agent's reference books).
        trials: what the strategies tried are, in the note on DSR.
    """
    pbo = statistics["pbo"]
    pbo_text = (f"PBO {pbo['value']:.3f} (CSCV, {pbo['n_blocks']} blocks, {pbo['n_combinations']} combinations)"
                if pbo["value"] is not None else "PBO not estimable (one strategy, or too few rows)")
    parts = [
        "<h2>Backtest</h2>",
        f'<p class="note">{html.escape(description)}</p>' if description else "",
        f'<p class="note">{statistics["n_trials"]} strategies tried ({html.escape(trials)}): DSR deflates each '
        f"Sharpe ratio by the best of them by luck. {html.escape(pbo_text)}: the probability that the "
        "strategy best in sample ranks below the median out of sample. Sharpe ratios are annualised, "
        "net of costs; <i>d</i> counts the days of a class.</p>",
        summary_table(statistics),
        _img(equity_overview(pnl), "net equity of every strategy"),
    ]
    book = pnl[pnl["asset"] == PORTFOLIO]
    if detailed is not None:
        book = book[book["strategy"].isin(list(detailed))]
    for name, rows in progress(list(book.groupby("strategy", sort=False)), "tearsheet: strategies"):
        rows = rows.sort_values("timestamp").reset_index(drop=True)
        parts.append(f"<h3>{html.escape(str(name))}</h3>")
        parts.append(_img(over_time(rows, str(name), rolling_window, periods_per_year),
                          "equity, drawdown, rolling Sharpe, turnover and costs"))
        parts.append(_img(months_and_distribution(rows), "monthly returns and the return distribution"))
    return "\n".join(parts)
