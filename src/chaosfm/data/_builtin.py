"""Built-in datasets: real market data shipped inside PyPI packages, and chaotic systems.

Market data (no network needed):
- ``sp500``, ``nasdaq``: daily OHLCV 1999-2018 from ``arch.data`` (NCSA licence).
- ``ndx``, ``n225``, ``jkse``: daily OHLCV 1990-2001 (JKSE from 1997) from ``nolds.datasets``
  (MIT licence). The source marks market holidays as rows of nulls; those rows are dropped and the
  drop is recorded in ``frame.attrs["repairs"]``.
- ``indices``: the five markets above in one long frame, ``asset`` the market's name, for models
  pooled over markets.
- ``sp500_stocks``: daily closes of 20 large US stocks (AAPL ... XOM), 1990-2022, from
  ``skfolio.datasets.load_sp500_dataset`` (BSD-3-Clause licence): a close-only frame
  ``asset, timestamp, close``, one asset per ticker. Rows the source leaves empty for a ticker
  would be dropped and recorded as the nolds holidays are (the shipped file has none).

Chaotic systems are integrated on demand (see ``chaosfm.data._chaos``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DatasetInfo:
    """What ``chaosfm datasets`` lists about a built-in dataset."""

    name: str
    kind: str  # "market" or "trajectory"
    frequency: str
    source: str
    licence: str
    description: str


def _arch(module: str) -> pd.DataFrame:
    import importlib

    raw = importlib.import_module(f"arch.data.{module}").load()
    frame = raw.reset_index().rename(columns={"Date": "timestamp"})
    frame.columns = [str(c).lower().replace(" ", "_") for c in frame.columns]
    frame.insert(0, "asset", module)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[ns]")
    frame.attrs["repairs"] = []
    return frame


def _nolds(attribute: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        # nolds 0.6.2 imports pkg_resources, which warns on import; nothing we can act on.
        warnings.simplefilter("ignore")
        import nolds.datasets

    days, values = getattr(nolds.datasets, attribute)
    frame = pd.DataFrame(
        values, columns=["open", "high", "low", "close", "adj_close", "volume"]
    )
    frame.insert(0, "timestamp", pd.to_datetime(days).astype("datetime64[ns]"))
    frame.insert(0, "asset", attribute)
    # Yahoo marks closed days with "null" in every field; nolds pads the open from the previous
    # close, which leaves rows with an open and nothing else. They are not candles: drop them.
    holiday = frame[["high", "low", "close", "volume"]].isna().all(axis=1).to_numpy()
    return _drop_empty(frame, holiday, "market-holiday rows the source marks null")


def _drop_empty(frame: pd.DataFrame, empty: np.ndarray, what: str) -> pd.DataFrame:
    """``frame`` without the rows the source leaves empty, the drop recorded in ``attrs["repairs"]``."""
    kept = frame.loc[~empty].reset_index(drop=True)
    kept.attrs["repairs"] = [f"dropped {int(empty.sum())} {what}"] if empty.any() else []
    return kept


def _skfolio_stocks() -> pd.DataFrame:
    """skfolio's wide table of closes (one column per ticker) as a long close-only frame."""
    from skfolio.datasets import load_sp500_dataset

    wide = load_sp500_dataset()
    frame = wide.rename_axis(index="timestamp").reset_index().melt(
        id_vars="timestamp", var_name="asset", value_name="close"
    )  # ticker by ticker, each in date order
    frame = frame[["asset", "timestamp", "close"]]
    frame["asset"] = frame["asset"].astype(str)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[ns]")
    # A ticker listed after 1990 (or delisted) would have no close on some dates: not prices.
    empty = frame["close"].isna().to_numpy()
    counts = frame.loc[empty, "asset"].value_counts(sort=False)
    where = ", ".join(f"{asset}: {count}" for asset, count in counts.items())
    return _drop_empty(frame, empty, f"row(s) with no close ({where})")


def _indices() -> pd.DataFrame:
    """The five single-market datasets concatenated, each market's rows under its own name."""
    parts = [market_frame(name) for name in _INDEX_NAMES]
    frame = pd.concat(parts, ignore_index=True)
    # Each part says what was dropped from it; the combined list says from which market.
    frame.attrs["repairs"] = [
        f"{part.attrs['name']}: {repair}" for part in parts for repair in part.attrs["repairs"]
    ]
    return frame


_ARCH = "arch.data (Kevin Sheppard's arch package)"
_NOLDS = "nolds.datasets (Yahoo Finance via the nolds package)"

MARKET: dict[str, tuple[DatasetInfo, Callable[[], pd.DataFrame]]] = {
    "sp500": (
        DatasetInfo("sp500", "market", "daily", _ARCH, "NCSA", "S&P 500 index, 1999-2018"),
        lambda: _arch("sp500"),
    ),
    "nasdaq": (
        DatasetInfo("nasdaq", "market", "daily", _ARCH, "NCSA", "NASDAQ Composite, 1999-2018"),
        lambda: _arch("nasdaq"),
    ),
    "ndx": (
        DatasetInfo("ndx", "market", "daily", _NOLDS, "MIT", "NASDAQ-100 index, 1990-2001"),
        lambda: _nolds("ndx"),
    ),
    "n225": (
        DatasetInfo("n225", "market", "daily", _NOLDS, "MIT", "Nikkei 225 index, 1990-2001"),
        lambda: _nolds("n225"),
    ),
    "jkse": (
        DatasetInfo("jkse", "market", "daily", _NOLDS, "MIT", "Jakarta Composite, 1997-2001"),
        lambda: _nolds("jkse"),
    ),
}
_INDEX_NAMES = tuple(MARKET)
MARKET["indices"] = (
    DatasetInfo(
        "indices", "market", "daily", f"{_ARCH}; {_NOLDS}", "NCSA; MIT",
        "the five indices above, one asset each (sp500, nasdaq, ndx, n225, jkse), 1990-2018",
    ),
    _indices,
)
MARKET["sp500_stocks"] = (
    DatasetInfo(
        "sp500_stocks", "market", "daily",
        "skfolio.datasets (load_sp500_dataset, the skfolio package)", "BSD-3-Clause",
        "daily closes (close only) of 20 large US stocks, AAPL to XOM, 1990-2022",
    ),
    _skfolio_stocks,
)


def market_frame(name: str) -> pd.DataFrame:
    """The raw (not yet validated) frame of a built-in market dataset."""
    info, loader = MARKET[name]
    frame = loader()
    frame.attrs.update(
        name=name, kind="market", source=info.source, licence=info.licence,
        frequency=info.frequency,
    )
    return frame
