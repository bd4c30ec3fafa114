"""``Forecaster``: any forecaster of chaosfm over long DataFrames in the field's layouts.

``Forecaster.from_name("garch")`` or ``Forecaster.load(run_dir)``, then ``fit(df)`` and
``predict(df, h, quantiles)``, where ``df`` is long format in one of three layouts:

- Nixtla: ``unique_id, ds, y``;
- Chronos: ``item_id, timestamp, target``;
- chaosfm's own: ``asset, timestamp, open, high, low, close, volume`` (or ``close`` alone), or a
  trajectory ``asset, timestamp, x0..xk``.

The id column may be left out for a single series. Every frame is validated on the way in
(:func:`chaosfm.data.validate`: a bad frame raises a :class:`~chaosfm.data.DataError` naming the
column, the row and the rule). ``predict`` returns one row per series and future step: the id
column and the timestamp column under the input's own names, ``mean`` and one column per
quantile level named as Chronos' ``predict_df`` names them (``"0.1"``, ``"0.5"``, ...).

Dimension letters: S samples, H horizon steps, C channels (target columns).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._config import ConfigError, require_int
from chaosfm._progress import progress, status
from chaosfm.data import (
    DataError,
    MissingColumnError,
    NonPositivePriceError,
    canonical_columns,
    split_assets,
    state_columns,
    validate,
)
from chaosfm.forecasters._base import AbstractForecaster, Forecast
from chaosfm.forecasters._registry import make_forecaster

__all__ = ["VALUES", "Forecaster", "forecast_table", "future_timestamps", "quantile_column", "series_key"]

VALUES = ("prices", "levels")
"""How a univariate ``y`` / ``target`` column is read: as a price (chaosfm's ``close``: modelled
on log returns, must be > 0) or as the level of a state variable (chaosfm's ``x0``: modelled on
the values themselves, any sign)."""

_UNIVARIATE = ("y", "target")
_LAYOUTS = (
    "Nixtla (unique_id, ds, y), Chronos (item_id, timestamp, target) or chaosfm "
    "(asset, timestamp, open, high, low, close, volume; or close alone; or x0..xk)"
)


def quantile_column(level: float) -> str:
    """The column of quantile ``level``, named as Chronos' ``predict_df`` names it: ``"0.1"``."""
    return str(float(level))


def future_timestamps(stamps: pd.Series, horizon: int) -> list[Any]:
    """The ``horizon`` timestamps after ``stamps``.

    Dates: business days after daily bars (holidays are not known), calendar months after monthly
    ones, else the median of the last 30 steps. Numbers: the median recent step, as integers when
    the stamps are integers. None for each step when one row gives no spacing.
    """
    last = stamps.iloc[-1]
    if isinstance(last, pd.Timestamp):
        recent = pd.DatetimeIndex(stamps.iloc[-30:])
        spacing = recent.to_series().diff().median()
        if pd.isna(spacing):
            return [None] * horizon
        if pd.Timedelta(hours=20) <= spacing <= pd.Timedelta(days=4):  # daily bars with weekends
            offset = pd.offsets.BDay()
        elif spacing >= pd.Timedelta(days=28):  # monthly or coarser bars: calendar months
            offset = pd.DateOffset(months=max(1, round(spacing / pd.Timedelta(days=30.44))))
        else:
            offset = spacing
        return list(pd.date_range(last, periods=horizon + 1, freq=offset)[1:])
    spacing = float(pd.Series(stamps.iloc[-30:], dtype=float).diff().median()) if len(stamps) > 1 else float("nan")
    if not pd.notna(spacing):
        return [None] * horizon
    if pd.api.types.is_integer_dtype(stamps.dtype):
        return [int(last) + int(round(spacing)) * (h + 1) for h in range(horizon)]
    return [round(float(last) + spacing * (h + 1), 10) for h in range(horizon)]  # no 200.00000000000003


def forecast_table(forecasts: Mapping[str, Forecast], quantiles: Sequence[float]) -> pd.DataFrame:
    """The long table of forecasts: ``asset, timestamp, step, column, mean, "0.1", ...``.

    Args:
        forecasts: asset -> its forecast, ``timestamps`` set (:meth:`Forecaster.forecast`).
        quantiles: the Q quantile levels, each in (0, 1).

    Returns:
        One row per asset, step (1..H) and column, in that order.
    """
    levels = _levels(quantiles)
    tables = []
    for asset, forecast in forecasts.items():
        horizon, channels = forecast.horizon, len(forecast.columns)
        values = forecast.quantile(levels)  # (Q, H, C)
        stamps = forecast.timestamps or [None] * horizon
        table = pd.DataFrame({
            "asset": str(asset),
            "timestamp": np.repeat(np.asarray(stamps, dtype=object), channels),
            "step": np.repeat(np.arange(1, horizon + 1), channels),
            "column": np.tile(forecast.columns, horizon),
            "mean": forecast.mean().reshape(-1),
        })
        for i, level in enumerate(levels):
            table[quantile_column(level)] = values[i].reshape(-1)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table["timestamp"] = _stamp_column(table["timestamp"])
    return table


def _stamp_column(stamps: pd.Series) -> pd.Series:
    """Object timestamps as dates or numbers where they are all of one such type."""
    known = stamps.dropna()
    if len(known) and all(isinstance(s, pd.Timestamp) for s in known):
        return pd.to_datetime(stamps)
    if len(known) == len(stamps) and all(isinstance(s, (int, np.integer)) for s in known):
        return stamps.astype(np.int64)
    if len(known) and all(isinstance(s, (int, float, np.number)) for s in known):
        return stamps.astype(np.float64)
    return stamps


def _levels(quantiles: Sequence[float]) -> list[float]:
    if isinstance(quantiles, (int, float)):
        quantiles = [quantiles]
    try:
        levels = [float(q) for q in quantiles]
    except (TypeError, ValueError):
        raise ConfigError(f"quantiles must be numbers strictly between 0 and 1, got {quantiles!r}") from None
    bad = [q for q in levels if not 0 < q < 1]
    if bad or not levels:
        raise ConfigError(f"quantiles must lie strictly between 0 and 1, got {bad or levels}")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"quantiles must not repeat a level, got {levels}")
    return levels


def series_key(key: Any, asset: str) -> Any:
    """The key of one series' draws: ``key`` folded with a checksum of the series id, so a
    series' forecast depends on the seed and its id, not on which other series share the call."""
    import jax

    return jax.random.fold_in(key, zlib.crc32(str(asset).encode()) & 0x7FFFFFFF)


@dataclass(frozen=True)
class _Layout:
    """Where a frame keeps what chaosfm needs, under the frame's own column names."""

    id_column: str | None
    time_column: str
    renamed: dict[str, str]
    """canonical column -> the input's name of it."""


class Forecaster:
    """A chaosfm forecaster behind the field's frame conventions (Nixtla, Chronos, chaosfm).

    Args:
        forecaster: any :class:`AbstractForecaster` (``from_name`` and ``load`` build one).
        values: how a univariate ``y`` / ``target`` column is read (:data:`VALUES`): ``"prices"``
            (the default: chaosfm's ``close``, > 0, modelled on log returns, as for the
            market baselines such as GARCH) or ``"levels"`` (chaosfm's ``x0``: a state variable of
            any sign, modelled on its values, as for a chaotic trajectory). chaosfm's own columns
            are read as they are.

    Example:
        >>> model = Forecaster.from_name("garch").fit(df)          # df: unique_id, ds, y
        >>> model.predict(df, h=5, quantiles=(0.1, 0.5, 0.9))      # unique_id, ds, mean, 0.1, 0.5, 0.9
    """

    def __init__(self, forecaster: AbstractForecaster, *, values: str = "prices"):
        if not isinstance(forecaster, AbstractForecaster):
            raise ConfigError(f"Forecaster wraps an AbstractForecaster, got {type(forecaster).__name__}")
        if values not in VALUES:
            raise ConfigError(f"values must be one of {', '.join(VALUES)}, got {values!r}")
        self.forecaster = forecaster
        self.values = values

    @classmethod
    def from_name(cls, name: str, *, values: str = "prices", **options: Any) -> "Forecaster":
        """The forecaster registered as ``name`` (:data:`FORECASTERS`) built with ``options``.

        Raises:
            ConfigError: an unknown name (listing the known ones) or an option it does not take.
        """
        try:
            return cls(make_forecaster(name, **options), values=values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None

    @classmethod
    def load(cls, run_dir: Any, *, values: str = "prices", **options: Any) -> "Forecaster":
        """The forecaster of a run folder (``chaosfm train``, ``stage`` or ``pretrain``), its
        hashes checked, built with ``options`` (a code model's ``temperature``, ``top_k``).

        Raises:
            ConfigError: not a run folder, or a run of a kind that does not forecast.
            ArtifactError: a file of the run is missing or damaged.
        """
        from chaosfm.forecasters._from_run import load_forecaster  # the model code, on first use

        with status(f"loading the run {run_dir}"):
            return cls(load_forecaster(run_dir, **options), values=values)

    @property
    def name(self) -> str:
        return self.forecaster.name

    @property
    def trained_through(self) -> Any:
        """The last timestamp of every series the forecaster (or its run) was fitted on."""
        return self.forecaster.trained_through

    def __repr__(self) -> str:
        return f"Forecaster({self.name!r}, values={self.values!r})"

    def fit(self, df: pd.DataFrame) -> "Forecaster":
        """Fit on every row of ``df`` (a forecast of the future sees all the past); return self.

        Raises:
            DataError: the frame breaks a rule (naming the column, the row and the rule).
        """
        frame, _ = self._read(df)
        with status(f"fitting {self.name} on {frame['asset'].nunique()} series"):
            self.forecaster.fit(frame)
        return self

    def forecast(
        self,
        df: pd.DataFrame,
        horizon: int,
        num_samples: int = 100,
        *,
        seed: int = 0,
        key: Any = None,
        context_length: int | None = None,
    ) -> dict[str, Forecast]:
        """Sample paths after the last row of every series of ``df``.

        Args:
            df: the history of each series, in any of the layouts (the context of the forecast).
            horizon: steps to forecast (H).
            num_samples: sample paths per series (S).
            seed: turned into the key when ``key`` is None.
            key: a JAX PRNG key (overrides ``seed``); each series draws from
                :func:`series_key` of it.
            context_length: rows of each series' history handed to the forecaster (None: all;
                a forecaster that reads all history, such as the online predictor, gets all).

        Returns:
            series id -> :class:`Forecast` of samples ``(S, H, C)`` with its future timestamps.

        Raises:
            ConfigError: the forecaster is not fitted, or a bad argument.
            DataError: the frame breaks a rule or lacks a column the forecaster predicts.
        """
        import jax

        horizon = require_int(horizon, "h")
        num_samples = require_int(num_samples, "num_samples")
        if context_length is not None:
            context_length = require_int(context_length, "context_length")
        if self.forecaster.trained_through is None:
            raise ConfigError(f"{self.name} is not fitted: call fit(df) before predict")
        frame, layout = self._read(df)
        wanted = self.forecaster.target_columns(frame)
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise MissingColumnError(
                f"{self.name} forecasts {wanted}; the frame lacks {[layout.renamed.get(c, c) for c in missing]}",
                source=str(df.attrs.get("name", "<frame>")), rule="the forecaster's target columns",
            )
        root = jax.random.key(require_int(seed, "seed", None)) if key is None else key
        out: dict[str, Forecast] = {}
        series = split_assets(frame)
        for asset, part in progress(list(series.items()), f"forecasting with {self.name}"):
            part.attrs = dict(frame.attrs)
            context = part
            if context_length is not None and not self.forecaster.reads_all_history:
                context = part.iloc[-context_length:]
            result = self.forecaster.forecast(context, horizon, num_samples, key=series_key(root, asset))
            result.asset = str(asset)
            result.timestamps = future_timestamps(part["timestamp"], horizon)
            out[str(asset)] = result
        return out

    def predict(
        self,
        df: pd.DataFrame,
        h: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        *,
        num_samples: int = 100,
        seed: int = 0,
        key: Any = None,
        context_length: int | None = None,
    ) -> pd.DataFrame:
        """The mean and quantiles of the next ``h`` steps of every series of ``df``.

        Args:
            df: the history of each series (see the module docstring for the layouts).
            h: steps to forecast.
            quantiles: quantile levels, each strictly between 0 and 1.
            num_samples: sample paths per series behind the mean and quantiles.
            seed: the integer the draws derive from (``key`` overrides it).
            key: a JAX PRNG key, instead of ``seed``.
            context_length: rows of each series' history to forecast from (None: all).

        Returns:
            One row per series and future step (and per column, with a ``column`` column, when
            a trajectory has several): the input's id column (when it has one) and timestamp
            column, ``mean``, and one column per level (``"0.1"``, ...). Timestamps are the
            future ones: business days after daily dates.

        Raises:
            ConfigError: the forecaster is not fitted, or a bad argument.
            DataError: the frame breaks a rule (naming the column, the row and the rule).
        """
        levels = _levels(quantiles)
        forecasts = self.forecast(df, h, num_samples, seed=seed, key=key, context_length=context_length)
        table = forecast_table(forecasts, levels)
        layout = self._layout(df)
        if table["column"].nunique() == 1:
            table = table.drop(columns="column")
        else:
            table["column"] = table["column"].map(lambda c: layout.renamed.get(c, c))
        table = table.drop(columns="step")
        if layout.id_column is None:
            table = table.drop(columns="asset")
        return table.rename(columns={"asset": layout.id_column, "timestamp": layout.time_column})

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (Nixtla, Chronos or chaosfm layout) as chaosfm's validated long frame, read as
        this forecaster reads it (``values``).

        Raises:
            DataError: a rule broken, naming the input's own column.
        """
        return self._read(df)[0]

    def _layout(self, df: pd.DataFrame) -> _Layout:
        """Which of ``df``'s columns are the id, the time and the target.

        Raises:
            MissingColumnError: no time column, or no target column, naming the frame's columns
                and the layouts accepted.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        source = str(df.attrs.get("name", "<frame>"))
        canonical = canonical_columns(df.iloc[:0], source).columns
        renamed = {str(new): str(old) for new, old in zip(canonical, df.columns)}
        columns = [str(c) for c in df.columns]
        if "timestamp" not in renamed:
            raise MissingColumnError(
                f"no time column in columns {columns}; expected {_LAYOUTS}", source=source, rule="a known layout"
            )
        candles = [c for c in ("open", "high", "low", "close") if c in renamed]
        if not candles and not state_columns(pd.DataFrame(columns=canonical)):
            raise MissingColumnError(
                f"no target column in columns {columns}; expected {_LAYOUTS}", source=source, rule="a known layout"
            )
        if self._univariate(renamed) and self.values == "prices":
            renamed = {("close" if new == "x0" else new): old for new, old in renamed.items()}
        return _Layout(id_column=renamed.get("asset"), time_column=renamed["timestamp"], renamed=renamed)

    @staticmethod
    def _univariate(renamed: Mapping[str, str]) -> bool:
        """A Nixtla or Chronos target (``y``, ``target``) and no chaosfm value column beside it."""
        return renamed.get("x0", "").strip().lower() in _UNIVARIATE and not any(
            c in renamed for c in ("open", "high", "low", "close", "volume", "x1")
        )

    def _read(self, df: pd.DataFrame) -> tuple[pd.DataFrame, _Layout]:
        """``df`` validated into chaosfm's canonical frame, and its layout.

        Raises:
            DataError: a rule broken, naming the input's own column (``y``, not ``close``).
        """
        layout = self._layout(df)
        source = str(df.attrs.get("name", "<frame>"))
        frame = canonical_columns(df, source)
        if "close" in layout.renamed and "close" not in frame.columns:
            frame = frame.rename(columns={"x0": "close"})
        try:
            checked = validate(frame, source)
        except DataError as error:
            if error.column is None or error.column not in layout.renamed:
                raise
            own = layout.renamed[error.column]
            detail = error.detail
            if detail.startswith(f"{error.column} "):  # "close must be > 0" of a y column: "y must be > 0"
                detail = own + detail[len(error.column):]
            if isinstance(error, NonPositivePriceError) and own != "close":
                detail += f" (values='prices' reads {own} as a price; a series of levels: values='levels')"
            raise type(error)(
                detail, source=error.source, row=error.row, column=own, rule=error.rule, line=error.line
            ) from None
        checked.attrs = {**df.attrs, **checked.attrs}
        return checked, layout
