"""Statistical baselines every learned forecaster is measured against, and their registry.

Each baseline implements :class:`~chaosfm.evaluate.AbstractForecaster`: ``fit(frame)`` on rows at
or before the cutoff, then ``forecast(context, horizon, num_samples, key=...)`` from one asset's
rows up to the origin, returning sample paths in the original units of the target columns
(prices for market data, state values for trajectories).

Market data is modelled on the log close (log returns for the stochastic parts, so price paths
stay positive); trajectories on the levels themselves, which may be zero or negative.

Dimension letters: S samples, H horizon steps, C channels (target columns), T context rows,
P autoregressive order.
"""

from __future__ import annotations

import warnings
from typing import Any, final

import numpy as np
import pandas as pd

from chaosfm._config import require_int
from chaosfm._random import numpy_rng
from chaosfm.data import frame_kind, split_assets, target_columns, trained_through
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key

_ALL_KINDS = ("market", "trajectory")


# --------------------------------------------------------------------------------------------
# Plumbing shared by every baseline (and by ContextParroting in _parroting.py).


def _begin_fit(forecaster: AbstractForecaster, frame: pd.DataFrame) -> tuple[str, list[str]]:
    """Check ``frame`` suits ``forecaster``, record ``trained_through``; return kind and columns."""
    who = type(forecaster).__name__
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{who}.fit: frame must be a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise ValueError(f"{who}.fit: frame has no rows")
    kind = frame_kind(frame)
    kinds = getattr(forecaster, "kinds", _ALL_KINDS)
    if kind not in kinds:
        raise ValueError(
            f"{who} supports {' and '.join(kinds)} frames; frame is a {kind} frame"
        )
    columns = target_columns(frame)
    if not columns:
        raise ValueError(f"{who}.fit: frame has no target columns (close, or x0..xk)")
    missing = [c for c in ("asset", "timestamp") if c not in frame.columns]
    if missing:
        raise ValueError(f"{who}.fit: frame lacks {', '.join(missing)}; pass a validated frame")
    forecaster.trained_through = trained_through(frame)
    return kind, columns


def _series_by_asset(frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Asset -> its target values ``(T_asset, C)`` float64, in row order."""
    return {
        asset: part[columns].to_numpy(dtype=np.float64)
        for asset, part in split_assets(frame).items()
    }


def _read_context(
    forecaster: AbstractForecaster,
    context: pd.DataFrame,
    horizon: int,
    num_samples: int,
    min_rows: int,
    why: str,
) -> tuple[np.ndarray, str | None]:
    """Validate forecast arguments; return the context's target values ``(T, C)`` and its asset.

    Args:
        forecaster: a fitted baseline (it holds ``_columns`` after ``fit``).
        context: one asset's rows up to the origin.
        horizon: steps to forecast, >= 1.
        num_samples: paths to draw, >= 1.
        min_rows: the fewest context rows the method can work from.
        why: what those rows are needed for, quoted in the error.
    """
    who = type(forecaster).__name__
    columns = getattr(forecaster, "_columns", None)
    if columns is None:
        raise RuntimeError(f"{who}.forecast was called before fit")
    require_int(horizon, "horizon", 1)
    require_int(num_samples, "num_samples", 1)
    if not isinstance(context, pd.DataFrame):
        raise ValueError(f"context must be a pandas DataFrame, got {type(context).__name__}")
    missing = [c for c in columns if c not in context.columns]
    if missing:
        raise ValueError(
            f"context lacks the target column(s) {', '.join(missing)} that {who} was fitted on"
        )
    asset = None
    if "asset" in context.columns and len(context):
        names = pd.unique(context["asset"])
        if len(names) > 1:
            raise ValueError(
                f"context must hold one asset's rows; it holds {len(names)}: {list(names)[:5]}"
            )
        asset = str(names[0])
    if len(context) < min_rows:
        raise ValueError(
            f"context has {len(context)} rows; {who} needs at least {min_rows} ({why})"
        )
    values = context[columns].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("context has NaN or infinite target values; validate it first")
    return values, asset


def _to_model_space(values: np.ndarray, kind: str) -> np.ndarray:
    """Log prices for market data, levels for trajectories."""
    if kind == "market":
        if np.any(values <= 0):
            raise ValueError("market prices must be > 0 to take logs")
        return np.log(values)
    return values


def _from_model_space(values: np.ndarray, kind: str) -> np.ndarray:
    return np.exp(values) if kind == "market" else values


# --------------------------------------------------------------------------------------------
# Baselines.


@final
class LastValue(AbstractForecaster):
    """Persistence: every step of every sample repeats the last observed value.

    Deterministic; ``key`` is accepted and ignored. Works on market and trajectory frames.
    """

    name = "last_value"
    kinds = _ALL_KINDS

    def __init__(self) -> None:
        self._kind: str | None = None
        self._columns: list[str] | None = None

    def fit(self, frame: pd.DataFrame) -> "LastValue":
        self._kind, self._columns = _begin_fit(self, frame)
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``, all equal to the context's last row."""
        values, asset = _read_context(self, context, horizon, num_samples, 1, "its last value")
        samples = np.broadcast_to(values[-1], (num_samples, horizon, values.shape[1]))
        return Forecast(samples.copy(), self._columns, asset=asset)


@final
class RandomWalk(AbstractForecaster):
    """Driftless Gaussian random walk with the context's recent volatility.

    Market data: log prices, ``log P_{T+h} = log P_T + sigma * (e_1 + ... + e_h)`` with
    ``e ~ N(0, 1)`` and ``sigma`` the sample standard deviation (ddof 1) of the last ``window``
    log returns of the context. The median path stays at the last price; the mean drifts by
    ``exp(sigma^2 h / 2)``. Trajectories: the same walk on the levels, with ``sigma`` per channel
    from the last ``window`` increments (values may be zero or negative).

    Args:
        window: log returns (increments) used for ``sigma``; the context needs ``window + 1`` rows.
    """

    name = "random_walk"
    kinds = _ALL_KINDS

    def __init__(self, window: int = 20) -> None:
        self.window = require_int(window, "window", 2)
        self._kind: str | None = None
        self._columns: list[str] | None = None

    def fit(self, frame: pd.DataFrame) -> "RandomWalk":
        """Records columns and ``trained_through``; ``sigma`` comes from each context."""
        self._kind, self._columns = _begin_fit(self, frame)
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)`` of prices (market) or levels (trajectories)."""
        require_key(key, "RandomWalk.forecast")
        values, asset = _read_context(
            self, context, horizon, num_samples, self.window + 1,
            f"window={self.window} returns need window + 1 rows",
        )
        level = _to_model_space(values, self._kind)
        steps = np.diff(level[-(self.window + 1):], axis=0)  # (window, C)
        sigma = steps.std(axis=0, ddof=1)  # (C,)
        shocks = numpy_rng(key).standard_normal((num_samples, horizon, level.shape[1]))
        paths = level[-1] + np.cumsum(sigma * shocks, axis=1)  # (S, H, C)
        return Forecast(_from_model_space(paths, self._kind), self._columns, asset=asset)


def infer_season(frame: pd.DataFrame) -> int:
    """The seasonal period in rows that the bars' spacing implies (FPP 3rd ed., Sec. 2.1, Table 2.1).

    From the median spacing of the first asset's timestamps: intraday bars repeat each trading day,
    so the season is the median number of rows per calendar day (24 for hourly FX, 7 for hourly
    bars of a 6.5-hour session, 78 for its 5-minute bars); daily bars repeat each week, 5 rows
    without weekend rows and 7 with them; weekly bars 52, monthly 12, quarterly 4. Row-indexed
    (numeric) time, a single row, or yearly bars have no season the calendar gives: 1, which makes
    the method a naive forecast with bootstrapped one-step errors.
    """
    stamps = frame["timestamp"]
    if "asset" in frame.columns:
        stamps = stamps[frame["asset"] == frame["asset"].iloc[0]]
    if len(stamps) < 2 or not pd.api.types.is_datetime64_any_dtype(stamps):
        return 1
    stamps = pd.DatetimeIndex(stamps)
    spacing = stamps.to_series().diff().median()
    if spacing < pd.Timedelta(hours=20):  # intraday: one trading day of rows
        return max(1, int(stamps.to_series().groupby(stamps.normalize()).size().median()))
    if spacing <= pd.Timedelta(days=4):  # daily: one week of rows
        return 7 if bool((stamps.day_of_week >= 5).any()) else 5
    if spacing <= pd.Timedelta(days=10):
        return 52
    if spacing <= pd.Timedelta(days=45):
        return 12
    if spacing <= pd.Timedelta(days=135):
        return 4
    return 1


@final
class SeasonalNaive(AbstractForecaster):
    """Seasonal naive: repeat the last season, plus bootstrapped seasonal errors.

    On ``y`` = log close (market) or the levels (trajectories), with season ``m``, the point
    forecast is ``y_{T+h} = y_{T+h-m*k}``, ``k = ceil(h/m)`` (Hyndman & Athanasopoulos,
    *Forecasting: Principles and Practice*, 3rd ed., Sec. 5.2). The seasonal errors of the
    context are ``e_t = y_t - y_{t-m}``. Samples follow the model the method implies,
    ``y_t = y_{t-m} + e_t``: the error at step ``h`` is the sum of ``k`` errors drawn with
    replacement from the context's (a row of all channels at once), and it is shared with step
    ``h - m`` of the same path. Its variance is ``k`` times that of one error, the
    ``sqrt(ceil(h/m))`` scaling of FPP Sec. 5.5, while each path stays coherent from one season
    to the next. Errors are not demeaned: a drift the method misses in the context shows in the
    samples.

    Args:
        season: period ``m`` in rows; the context needs ``season + 1`` rows. By default
            :func:`infer_season` reads it from the timestamps at ``fit`` (5 for daily bars without
            weekends, 24 for hourly bars around the clock).
    """

    name = "seasonal_naive"
    kinds = _ALL_KINDS

    def __init__(self, season: int | None = None) -> None:
        self._given = None if season is None else require_int(season, "season", 1)
        self.season: int = self._given if self._given is not None else 5
        self._kind: str | None = None
        self._columns: list[str] | None = None

    def fit(self, frame: pd.DataFrame) -> "SeasonalNaive":
        """Records columns, ``trained_through`` and the season (given, or from the timestamps)."""
        self._kind, self._columns = _begin_fit(self, frame)
        self.season = self._given if self._given is not None else infer_season(frame)
        return self

    def point(self, context: pd.DataFrame, horizon: int) -> np.ndarray:
        """The point forecast ``(H, C)`` in original units: the last season, repeated."""
        values, _ = _read_context(
            self, context, horizon, 1, self.season, f"one season of season={self.season} rows"
        )
        level = _to_model_space(values, self._kind)
        return _from_model_space(self._repeat(level, horizon), self._kind)

    def _repeat(self, level: np.ndarray, horizon: int) -> np.ndarray:
        rows = len(level) - self.season + np.arange(horizon) % self.season
        return level[rows]  # (H, C)

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``: the point forecast plus bootstrapped seasonal-error sums."""
        require_key(key, "SeasonalNaive.forecast")
        values, asset = _read_context(
            self, context, horizon, num_samples, self.season + 1,
            f"one seasonal error needs season + 1 rows with season={self.season}",
        )
        level = _to_model_space(values, self._kind)
        point = self._repeat(level, horizon)  # (H, C)
        errors = level[self.season:] - level[:-self.season]  # (T - m, C)
        seasons = -(-horizon // self.season)
        draws = numpy_rng(key).integers(0, len(errors), size=(num_samples, seasons * self.season))
        # (S, seasons, m, C): step h = season k, phase j; summing over k is the seasonal walk.
        noise = errors[draws].reshape(num_samples, seasons, self.season, level.shape[1])
        noise = np.cumsum(noise, axis=1).reshape(num_samples, seasons * self.season, -1)
        paths = point + noise[:, :horizon]
        return Forecast(_from_model_space(paths, self._kind), self._columns, asset=asset)


@final
class AutoRegressive(AbstractForecaster):
    """AR(P) with intercept per target column, least squares pooled over assets, Gaussian noise.

    Fitted on log returns (market) or levels (trajectories):
    ``y_t = c + phi_1 y_{t-1} + ... + phi_P y_{t-P} + sigma * e_t``, ``e_t ~ N(0, 1)``, one
    univariate model per column. Each asset contributes its own lagged rows (no lag crosses from
    one asset into another); ``sigma`` is the residual standard deviation with ``N - P - 1``
    degrees of freedom. Forecasts run the recursion from the context's last ``P`` values, drawing
    ``e`` for every step of every sample, and rebuild prices by cumulating simulated returns.

    Args:
        order: the number of lags P.

    Attributes (after ``fit``):
        intercept: ``(C,)`` the constants ``c``.
        lag_coefficients: ``(C, P)``, column ``i`` multiplying lag ``i + 1``.
        residual_std: ``(C,)`` the ``sigma`` per column.
    """

    name = "ar"
    kinds = _ALL_KINDS

    def __init__(self, order: int = 5) -> None:
        self.order = require_int(order, "order", 1)
        self._kind: str | None = None
        self._columns: list[str] | None = None
        self.intercept: np.ndarray | None = None
        self.lag_coefficients: np.ndarray | None = None
        self.residual_std: np.ndarray | None = None

    def _model_series(self, values: np.ndarray) -> np.ndarray:
        level = _to_model_space(values, self._kind)
        return np.diff(level, axis=0) if self._kind == "market" else level

    def fit(self, frame: pd.DataFrame) -> "AutoRegressive":
        """Least squares on the lagged rows of every asset (those long enough to have any)."""
        self._kind, self._columns = _begin_fit(self, frame)
        p = self.order
        designs, targets = [], []
        for values in _series_by_asset(frame, self._columns).values():
            series = self._model_series(values)  # (N_asset, C)
            if len(series) <= p:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(series, p + 1, axis=0)  # (n, C, P+1)
            targets.append(windows[:, :, -1])
            designs.append(windows[:, :, -2::-1])  # (n, C, P), lag 1 first
        rows = sum(len(t) for t in targets)
        if rows < p + 2:
            need = p + 2 if self._kind == "trajectory" else p + 3
            raise ValueError(
                f"AutoRegressive(order={p}) needs at least p + 2 = {p + 2} lagged rows to fit and "
                f"a residual; the frame gives {rows} (one asset needs >= {need} rows)"
            )
        lagged = np.concatenate(designs)  # (N, C, P)
        target = np.concatenate(targets)  # (N, C)
        columns = len(self._columns)
        self.intercept = np.empty(columns)
        self.lag_coefficients = np.empty((columns, p))
        self.residual_std = np.empty(columns)
        for c in range(columns):
            design = np.column_stack([np.ones(rows), lagged[:, c, :]])
            coef, *_ = np.linalg.lstsq(design, target[:, c], rcond=None)
            residual = target[:, c] - design @ coef
            self.intercept[c] = coef[0]
            self.lag_coefficients[c] = coef[1:]
            self.residual_std[c] = np.sqrt(residual @ residual / (rows - p - 1))
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)`` by running the fitted recursion with Gaussian noise."""
        require_key(key, "AutoRegressive.forecast")
        p = self.order
        market = self._kind == "market"
        values, asset = _read_context(
            self, context, horizon, num_samples, p + 1 if market else p,
            f"order={p} lags" + (" of log returns need order + 1 prices" if market else ""),
        )
        series = self._model_series(values)
        history = np.broadcast_to(series[-p:][::-1], (num_samples, p, series.shape[1])).copy()
        shocks = numpy_rng(key).standard_normal((num_samples, horizon, series.shape[1]))
        steps = np.empty_like(shocks)  # (S, H, C)
        for h in range(horizon):
            # history is (S, P, C), lag 1 first.
            mean = self.intercept + np.einsum("spc,cp->sc", history, self.lag_coefficients)
            steps[:, h] = mean + self.residual_std * shocks[:, h]
            history = np.concatenate([steps[:, h : h + 1], history[:, :-1]], axis=1)
        if market:
            paths = np.log(values[-1]) + np.cumsum(steps, axis=1)
        else:
            paths = steps
        return Forecast(_from_model_space(paths, self._kind), self._columns, asset=asset)


@final
class Garch(AbstractForecaster):
    """GARCH(1,1) on percent log returns (Bollerslev 1986), fitted with the ``arch`` package.

    ``r_t = 100 * log(P_t / P_{t-1}) = mu + eps_t``, ``eps_t = sigma_t z_t``,
    ``sigma_t^2 = omega + alpha eps_{t-1}^2 + beta sigma_{t-1}^2``, ``z_t`` standardised
    Student-t with ``nu`` degrees of freedom by default. Student-t because daily returns are
    heavy-tailed even after GARCH filtering, and the tails are what probabilistic scores
    (CRPS, quantile loss, VaR coverage) judge; a constant mean because it is arch's reference
    specification and the fitted ``mu`` is small (``mean="zero"`` drops it). GARCH(1,1) is the
    volatility baseline that is hard to beat (Hansen & Lunde 2005, J. Appl. Econometrics 20(7)).

    ``fit`` estimates the parameters by maximum likelihood separately for every asset with at
    least ``min_fit_returns`` returns, and once on the returns of all assets pooled (each asset's
    returns computed within the asset, then concatenated). ``forecast`` applies an asset's own
    parameters to the context, or the pooled ones for an asset the fit did not estimate (unseen,
    or too short): the variance recursion is run over the context's returns (arch's backcast
    starts it), then arch simulates ``num_samples`` return paths whose shocks come from a NumPy
    generator seeded by ``key`` (arch 8 distributions take ``seed=Generator``). The paths become
    prices ``P_T * exp(cumsum(r) / 100)``. Parameters are never re-estimated on the context.

    Args:
        mean: ``"constant"`` or ``"zero"``.
        distribution: ``"t"`` (Student-t) or ``"normal"``.
        min_fit_returns: fewest returns an asset needs for its own estimate; also the fewest the
            pooled fit accepts.

    Attributes (after ``fit``):
        parameters: asset -> ``pd.Series`` of arch parameters (``mu``, ``omega``, ``alpha[1]``,
            ``beta[1]``, ``nu``; ``mu`` absent for a zero mean, ``nu`` for a normal).
        pooled_parameters: the pooled estimate, used for every other asset.
    """

    name = "garch"
    kinds = ("market",)

    def __init__(
        self, *, mean: str = "constant", distribution: str = "t", min_fit_returns: int = 250
    ) -> None:
        if mean not in ("constant", "zero"):
            raise ValueError(f"mean must be 'constant' or 'zero', got {mean!r}")
        if distribution not in ("t", "normal"):
            raise ValueError(f"distribution must be 't' or 'normal', got {distribution!r}")
        self.mean = mean
        self.distribution = distribution
        self.min_fit_returns = require_int(min_fit_returns, "min_fit_returns", 10)
        self._kind: str | None = None
        self._columns: list[str] | None = None
        self.parameters: dict[str, pd.Series] = {}
        self.pooled_parameters: pd.Series | None = None

    def _model(self, returns: np.ndarray, seed: np.random.Generator | None = None) -> Any:
        from arch.univariate import GARCH, ConstantMean, Normal, StudentsT, ZeroMean

        mean_model = ConstantMean if self.mean == "constant" else ZeroMean
        shocks = StudentsT(seed=seed) if self.distribution == "t" else Normal(seed=seed)
        return mean_model(returns, volatility=GARCH(p=1, q=1), distribution=shocks, rescale=False)

    def _estimate(self, returns: np.ndarray, what: str) -> pd.Series:
        result = self._model(returns).fit(disp="off", show_warning=False)
        params = result.params
        if not np.all(np.isfinite(params.to_numpy())):
            raise ValueError(
                f"Garch.fit: the estimate for {what} is not finite: {params.to_dict()}"
            )
        if result.convergence_flag != 0:
            warnings.warn(
                f"Garch.fit: the optimiser did not converge for {what} "
                f"(flag {result.convergence_flag}); using its last iterate",
                RuntimeWarning,
                stacklevel=3,
            )
        return params

    def fit(self, frame: pd.DataFrame) -> "Garch":
        """Estimate per-asset and pooled parameters on the frame's percent log returns."""
        self._kind, self._columns = _begin_fit(self, frame)
        returns = {
            asset: 100.0 * np.diff(np.log(values[:, 0]))
            for asset, values in _series_by_asset(frame, self._columns).items()
        }
        self.parameters = {
            asset: self._estimate(r, f"asset {asset!r}")
            for asset, r in returns.items()
            if len(r) >= self.min_fit_returns
        }
        pooled = np.concatenate(list(returns.values()))
        if len(pooled) < self.min_fit_returns:
            raise ValueError(
                f"Garch.fit needs at least min_fit_returns={self.min_fit_returns} returns; "
                f"the frame has {len(pooled)}"
            )
        if len(returns) == 1:
            self.pooled_parameters = next(iter(self.parameters.values()))
        else:
            self.pooled_parameters = self._estimate(pooled, "the pooled assets")
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Price samples ``(S, H, 1)`` simulated from the fitted GARCH run over the context."""
        require_key(key, "Garch.forecast")
        values, asset = _read_context(
            self, context, horizon, num_samples, 2, "one log return to start the variance"
        )
        params = self.parameters.get(asset, self.pooled_parameters)
        returns = 100.0 * np.diff(np.log(values[:, 0]))
        model = self._model(returns, seed=numpy_rng(key))
        simulated = model.forecast(
            params.to_numpy(), horizon=horizon, method="simulation",
            simulations=num_samples, reindex=False,
        ).simulations.values[-1]  # (S, H) percent log returns
        paths = values[-1, 0] * np.exp(np.cumsum(simulated, axis=1) / 100.0)
        return Forecast(paths[:, :, None], self._columns, asset=asset)
