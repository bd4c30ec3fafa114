"""HAR-RV: the heterogeneous autoregressive model of realized variance (Corsi 2009), the
realized-volatility baseline that sits beside GARCH.

Each day's variance is measured from its candle with a range-based estimator
(:func:`realized_variance`), its logarithm is regressed by OLS on the logs of the daily, weekly
(5-day) and monthly (22-day) variance averages (:func:`har_design`, :func:`har_targets`), and the
forecast variances scale Student-t shocks into price paths (:class:`HarRV`).

Dimension letters: S samples, H horizon steps, T candles of one asset, N days of realized variance
(``T - 1``: each needs the previous close), R regression rows, K regressors (4: constant, daily,
weekly, monthly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, final

import numpy as np
import pandas as pd

from chaosfm._config import require_int
from chaosfm._random import numpy_rng
from chaosfm.data import require_ohlc
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.forecasters._baselines import _begin_fit, _read_context, _series_by_asset

__all__ = ["HarFit", "HarRV", "garman_klass_variance", "har_design", "har_targets", "realized_variance",
           "student_t_dof"]

WEEK = 5
"""Days in the weekly component (Corsi 2009, Sec. 2: a trading week)."""
MONTH = 22
"""Days in the monthly component, also the first day a design row exists for."""
CANDLE_COLUMNS = ("open", "high", "low", "close")
_GK_CLOSE_WEIGHT = 2.0 * math.log(2.0) - 1.0  # ~0.386, Garman & Klass's weight on (log C/O)^2
_DOF_BOUNDS = (2.05, 300.0)  # above 2 the variance exists; at 300 the t is a normal to 3 digits


def garman_klass_variance(open_, high, low, close) -> np.ndarray:
    """The Garman–Klass open-to-close variance of each candle, ``(T,)``, in squared log units.

    ``0.5 * log(H/L)^2 - (2 log 2 - 1) * log(C/O)^2``: the practical form of Garman & Klass's
    best analytic scale-invariant estimator (Garman & Klass 1980, J. Business 53(1)), about 7.4
    times as efficient as the squared open-to-close return for a driftless Brownian motion. It is
    never negative on a valid candle (``|log C/O| <= log H/L``, and ``0.5 > 0.386``); it is zero
    only when ``H == L``.

    Args:
        open_, high, low, close: prices ``(T,)``, all > 0, with ``low <= open, close <= high``.
    """
    log_range = np.log(np.asarray(high, dtype=np.float64) / np.asarray(low, dtype=np.float64))
    log_body = np.log(np.asarray(close, dtype=np.float64) / np.asarray(open_, dtype=np.float64))
    return 0.5 * log_range**2 - _GK_CLOSE_WEIGHT * log_body**2


def realized_variance(candles: np.ndarray, who: str = "realized_variance") -> np.ndarray:
    """Each day's close-to-close variance, ``(N,) = (T - 1,)``: squared overnight log return plus
    the Garman–Klass variance of the day's candle.

    The target is the close-to-close return, so the overnight gap ``log(O_t / C_{t-1})`` belongs
    in the day's variance: adding its square to the open-to-close estimate is the form Yang &
    Zhang (2000, J. Business 73(3), Sec. 2) write for Garman–Klass with opening jumps. Where the
    open is the previous close (index data often records it so) the gap is zero and the candle
    already spans the whole close-to-close move. The first candle has no previous close, so
    day ``i`` of the result is candle ``i + 1``.

    A day with zero variance (a flat candle that opened at the previous close: a holiday or a
    stale quote) has a log of minus infinity and no information, so it takes the previous day's
    value (leading ones the first positive day's).

    Args:
        candles: ``(T, 4)`` open, high, low, close prices of one asset, T >= 2.
        who: named in the error.

    Raises:
        ValueError: fewer than 2 candles, or every day's variance is zero.
    """
    candles = np.asarray(candles, dtype=np.float64)
    if candles.ndim != 2 or candles.shape[1] != 4 or candles.shape[0] < 2:
        raise ValueError(
            f"{who}: realized variance needs at least 2 candles (open, high, low, close); "
            f"got an array of shape {candles.shape}"
        )
    open_, high, low, close = candles.T
    overnight = np.log(open_[1:] / close[:-1])
    variance = overnight**2 + garman_klass_variance(open_[1:], high[1:], low[1:], close[1:])
    positive = variance > 0
    if not positive.any():
        raise ValueError(f"{who}: every candle is flat and opens at the previous close: the variance is zero")
    if not positive.all():
        # index of the last positive day at or before each day (the first positive one before it)
        last = np.maximum.accumulate(np.where(positive, np.arange(len(variance)), 0))
        last[: np.argmax(positive)] = np.argmax(positive)
        variance = variance[last]
    return variance


def _trailing_means(variance: np.ndarray, window: int) -> np.ndarray:
    """Mean of the ``window`` days ending at each day ``t >= MONTH - 1``, ``(N - MONTH + 1,)``."""
    total = np.concatenate([[0.0], np.cumsum(variance)])
    end = np.arange(MONTH, len(variance) + 1)  # one past day t
    return (total[end] - total[end - window]) / window


def har_design(variance: np.ndarray) -> np.ndarray:
    """HAR regressors of every day ``t = MONTH - 1 .. N - 1``, ``(R, K) = (N - 21, 4)``.

    Row ``t``: ``[1, log RV_t, log RV^(w)_t, log RV^(m)_t]``, with ``RV^(w)_t`` and ``RV^(m)_t``
    the means of the 5 and 22 days ending at ``t`` (Corsi 2009, Sec. 2, Eqs. 4-5 in logs: the
    log of the average, so each component is a variance over its horizon).

    Args:
        variance: daily variances ``(N,)``, all > 0, N >= 22.
    """
    variance = np.asarray(variance, dtype=np.float64)
    if len(variance) < MONTH:
        raise ValueError(f"the HAR design needs at least {MONTH} days of variance; got {len(variance)}")
    daily = variance[MONTH - 1 :]
    columns = [np.ones_like(daily), np.log(daily)]
    columns += [np.log(_trailing_means(variance, window)) for window in (WEEK, MONTH)]
    return np.stack(columns, axis=1)


def har_targets(variance: np.ndarray, max_horizon: int) -> np.ndarray:
    """Log mean variance of the next ``h`` days after each design day, ``(R, max_horizon)``.

    Entry ``[t - 21, h - 1]`` is ``log((RV_{t+1} + ... + RV_{t+h}) / h)``: Corsi's (2009, Sec. 4)
    multi-period target, the realized variance of the next ``h`` days as one average, regressed
    directly on the day-``t`` design row. NaN where day ``t + h`` is past the end.
    """
    variance = np.asarray(variance, dtype=np.float64)
    total = np.concatenate([[0.0], np.cumsum(variance)])
    start = np.arange(MONTH, len(variance) + 1)  # one past day t: the first target day's index
    targets = np.full((len(start), max_horizon), np.nan)
    for h in range(1, max_horizon + 1):
        valid = start + h <= len(variance)
        targets[valid, h - 1] = np.log((total[start[valid] + h] - total[start[valid]]) / h)
    return targets


def student_t_dof(standardized: np.ndarray) -> float:
    """Maximum-likelihood degrees of freedom of a unit-variance Student-t for ``standardized``.

    The density is ``t_nu(z / s) / s`` with ``s = sqrt((nu - 2) / nu)``, so the variance is 1 for
    every ``nu > 2`` (the standardized t of Bollerslev 1987, Rev. Econ. Stat. 69(3)); ``nu`` is
    searched on ``[2.05, 300]``.

    Args:
        standardized: returns divided by their forecast standard deviation, ``(n,)``.
    """
    from scipy import optimize, stats

    z = np.asarray(standardized, dtype=np.float64)

    def negative_loglik(nu: float) -> float:
        scale = math.sqrt((nu - 2.0) / nu)
        return -float(np.sum(stats.t.logpdf(z / scale, nu) - math.log(scale)))

    found = optimize.minimize_scalar(negative_loglik, bounds=_DOF_BOUNDS, method="bounded")
    return float(found.x)


@dataclass(frozen=True)
class HarFit:
    """One HAR-RV estimate (an asset's, or the pooled one).

    Attributes:
        coefficients: ``(max_horizon, K)``; row ``h - 1`` holds the OLS coefficients (constant,
            daily, weekly, monthly) of the ``h``-day log mean variance.
        residual_variance: ``(max_horizon,)`` OLS residual variance (sum of squares over
            ``R - K``) of each regression, for the log-normal mean ``exp(m + s^2 / 2)``.
        variance_scale: ``c``, the mean of ``(r_{t+1} - mu)^2 / A_1(t)`` over the training days:
            what the forecast variances are multiplied by so they are unbiased for the squared
            close-to-close return.
        nu: degrees of freedom of the standardized Student-t shocks.
        mean_return: daily mean log return of the paths (0 for ``mean="zero"``).
        n_days: days of realized variance the estimate used.
    """

    coefficients: np.ndarray
    residual_variance: np.ndarray
    variance_scale: float
    nu: float
    mean_return: float
    n_days: int


@final
class HarRV(AbstractForecaster):
    """HAR-RV in logs (Corsi 2009, J. Financial Econometrics 7(2)) on range-based daily variances,
    with Student-t price paths.

    Daily variance ``RV_t`` is the squared overnight log return plus the Garman–Klass variance of
    the day's candle (:func:`realized_variance`): Garman–Klass rather than Parkinson because daily
    OHLC has the open and close, and using them makes the estimator about 7.4 rather than 5.2
    times as efficient as a squared return. For each ``h = 1..max_horizon`` one OLS regression
    (statsmodels), the direct multi-period HAR of Corsi (2009, Sec. 4)::

        log mean(RV_{t+1..t+h}) = b0 + bd log RV_t + bw log RV^(w)_t + bm log RV^(m)_t + e

    A forecast reads the design row of the context's last day and takes the mean variance of the
    next ``h`` days as the scaled log-normal mean ``A_h = c exp(x b_h + s_h^2 / 2)``, ``s_h^2`` the
    regression's residual variance. The log return over steps ``1..h`` then has variance
    ``h A_h``, so day ``h``'s variance is ``v_h = h A_h - (h - 1) A_{h-1}`` (``v_1 = A_1``); each
    ``A_h`` comes from its own regression, so should ``v_h`` come out ``<= 0`` (a mean variance
    falling faster than ``A_{h-1} (h - 1) / h``; it never did on the built-in markets) the day
    takes ``A_h`` instead of a step without risk. The paths are
    ``P_T * exp(cumsum(mu + sqrt(v_h) z_h))`` with ``z`` unit-variance Student-t with ``nu``
    degrees of freedom, drawn from a NumPy generator seeded by ``key``.

    The training returns standardized by the in-sample one-day forecast,
    ``z_t = (r_{t+1} - mu) / sqrt(exp(x_t b_1 + s_1^2 / 2))``, give the variance scale
    ``c = mean(z^2)`` and, on ``z / sqrt(c)``, the maximum-likelihood ``nu``
    (:func:`student_t_dof`). ``c`` corrects the level: the range-based variance runs 1.3 to 1.9
    times below the squared close-to-close return on the built-in markets (a discretely sampled
    high and low understate the range), and unscaled paths would be that much too narrow; it is
    the whole-day scaling Hansen & Lunde (2005, J. Financial Econometrics 3(4)) apply to a
    partial-day realized variance. ``mu`` is the training mean log return (``mean="constant"``,
    as :class:`Garch` by default, so the two differ in the variance alone) or 0 (``mean="zero"``).

    ``fit`` estimates every asset with at least ``min_fit_days`` days separately and once more on
    the regression rows of all assets stacked (each asset's design built within the asset); the
    pooled estimate serves assets the fit did not estimate (unseen, or too short). Parameters are
    never re-estimated on the context.

    Args:
        mean: ``"constant"`` or ``"zero"``.
        max_horizon: longest horizon the fit prepares regressions for; a forecast may not ask
            for more steps.
        min_fit_days: fewest days of realized variance an asset needs for its own estimate; also
            the fewest the pooled fit accepts. At least ``22 + max_horizon + 10``: the monthly
            component and the longest target use ``21 + max_horizon`` days before a row exists.

    Attributes (after ``fit``):
        parameters: asset -> its :class:`HarFit`.
        pooled_parameters: the pooled :class:`HarFit`, used for every other asset.
    """

    name = "har_rv"
    kinds = ("market",)

    def __init__(self, *, mean: str = "constant", max_horizon: int = MONTH, min_fit_days: int = 250) -> None:
        if mean not in ("constant", "zero"):
            raise ValueError(f"mean must be 'constant' or 'zero', got {mean!r}")
        self.mean = mean
        self.max_horizon = require_int(max_horizon, "max_horizon", 1)
        self.min_fit_days = require_int(min_fit_days, "min_fit_days", 1)
        fewest = MONTH + self.max_horizon + 10
        if self.min_fit_days < fewest:
            raise ValueError(
                f"min_fit_days must be >= {fewest} (22 days for the monthly component, max_horizon="
                f"{self.max_horizon} for the longest target and 10 regression rows), got {min_fit_days}"
            )
        self._kind: str | None = None
        self._columns: list[str] | None = None
        self.parameters: dict[str, HarFit] = {}
        self.pooled_parameters: HarFit | None = None

    # ---------------------------------------------------------------------------------- fit

    def _estimate(
        self, designs: list[np.ndarray], targets: list[np.ndarray], returns: list[np.ndarray], what: str
    ) -> HarFit:
        """OLS per horizon on the stacked rows of ``designs`` ``(R_i, K)`` and ``targets``
        ``(R_i, max_horizon)``; ``nu`` from ``returns`` ``(R_i - 1,)`` (day ``t + 1``'s return
        beside design row ``t``)."""
        from statsmodels.regression.linear_model import OLS

        design, target = np.concatenate(designs), np.concatenate(targets)
        coefficients = np.empty((self.max_horizon, design.shape[1]))
        residual_variance = np.empty(self.max_horizon)
        for h in range(self.max_horizon):
            rows = np.isfinite(target[:, h])
            if rows.sum() <= design.shape[1]:
                raise ValueError(
                    f"HarRV.fit: {what} has {int(rows.sum())} regression rows for the {h + 1}-day "
                    f"target; OLS of {design.shape[1]} coefficients needs more (lower max_horizon or "
                    f"give longer history)"
                )
            result = OLS(target[rows, h], design[rows]).fit()
            coefficients[h], residual_variance[h] = result.params, result.mse_resid
        if not (np.all(np.isfinite(coefficients)) and np.all(np.isfinite(residual_variance))):
            raise ValueError(f"HarRV.fit: the estimate for {what} is not finite: {coefficients[0]}")
        pooled_returns = np.concatenate(returns)
        mean_return = float(pooled_returns.mean()) if self.mean == "constant" else 0.0
        # in-sample one-day forecast of day t + 1 from row t; the last row has no next return
        one_day = np.concatenate([
            np.exp(d[:-1] @ coefficients[0] + residual_variance[0] / 2.0) for d in designs
        ])
        standardized = (pooled_returns - mean_return) / np.sqrt(one_day)
        # Range-based variance from daily candles runs below the squared close-to-close return
        # (the high and low are sampled, not continuous; the log-normal mean is approximate):
        # on the built-in markets by a factor 1.3 to 1.9. Scaling the forecast by the training
        # ratio makes it unbiased for the squared return, as Hansen & Lunde (2005) scale a
        # partial-day realized variance to the whole day.
        variance_scale = float(np.mean(standardized**2))
        nu = student_t_dof(standardized / math.sqrt(variance_scale))
        n_days = sum(len(d) + MONTH - 1 for d in designs)
        return HarFit(coefficients, residual_variance, variance_scale, nu, mean_return, n_days)

    def fit(self, frame: pd.DataFrame) -> "HarRV":
        """Estimate per-asset and pooled regressions on the frame's daily candles."""
        self._kind, self._columns = _begin_fit(self, frame)
        require_ohlc(frame, "har_rv (Garman-Klass variance)")
        pieces: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        days: dict[str, int] = {}
        for asset, candles in _series_by_asset(frame, list(CANDLE_COLUMNS)).items():
            if len(candles) < MONTH + 2:  # not one regression row: the asset adds nothing
                days[asset] = max(len(candles) - 1, 0)
                continue
            variance = realized_variance(candles, f"HarRV.fit: asset {asset!r}")
            days[asset] = len(variance)
            # day t + 1's return for each design row t < N - 1 (day i's return is diff[i])
            returns = np.diff(np.log(candles[:, 3]))[MONTH:]
            pieces[asset] = (har_design(variance), har_targets(variance, self.max_horizon), returns)
        total = sum(days.values())
        if total < self.min_fit_days or not pieces:
            raise ValueError(
                f"HarRV.fit needs at least min_fit_days={self.min_fit_days} days of realized variance "
                f"(candles after each asset's first); the frame has {total}"
            )
        self.parameters = {
            asset: self._estimate([d], [t], [r], f"asset {asset!r}")
            for asset, (d, t, r) in pieces.items()
            if days[asset] >= self.min_fit_days
        }
        if len(pieces) == 1 and self.parameters:
            self.pooled_parameters = next(iter(self.parameters.values()))
        else:
            designs, targets, returns = (list(x) for x in zip(*pieces.values()))
            self.pooled_parameters = self._estimate(designs, targets, returns, "the pooled assets")
        return self

    # ----------------------------------------------------------------------------- forecast

    def daily_variance(self, context: pd.DataFrame, horizon: int) -> tuple[np.ndarray, HarFit]:
        """Forecast variance of each of the next ``horizon`` days' log returns, ``(H,)``, and the
        estimate used (the context asset's own, else the pooled one).

        Raises:
            MissingColumnError: the context lacks open, high or low (a close-only frame).
            ValueError: the context has fewer than 23 rows, or
                ``horizon`` exceeds ``max_horizon``.
        """
        candles, asset = self._read_candles(context, horizon, num_samples=1)
        return self._daily_variance(candles, asset, horizon)

    def _read_candles(
        self, context: pd.DataFrame, horizon: int, num_samples: int
    ) -> tuple[np.ndarray, str | None]:
        _, asset = _read_context(
            self, context, horizon, num_samples, MONTH + 1,
            f"the monthly component averages {MONTH} days, and each day's overnight gap needs the "
            f"previous close",
        )
        if horizon > self.max_horizon:
            raise ValueError(
                f"HarRV was fitted for horizons up to max_horizon={self.max_horizon}; asked for "
                f"{horizon} steps (construct it with max_horizon >= {horizon})"
            )
        require_ohlc(context, "har_rv (Garman-Klass variance)")
        candles = context[list(CANDLE_COLUMNS)].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(candles)) or np.any(candles <= 0):
            raise ValueError(
                "HarRV.forecast: context has non-positive or non-finite prices; validate it first"
            )
        return candles, asset

    def _daily_variance(
        self, candles: np.ndarray, asset: str | None, horizon: int
    ) -> tuple[np.ndarray, HarFit]:
        estimate = self.parameters.get(asset, self.pooled_parameters)
        # only the last 22 days enter the last design row
        variance = realized_variance(candles[-(MONTH + 1) :], "HarRV.forecast: context")
        row = har_design(variance)[-1]  # (K,)
        mean_variance = estimate.variance_scale * np.exp(
            estimate.coefficients[:horizon] @ row + estimate.residual_variance[:horizon] / 2.0
        )  # (H,) A_h
        cumulative = np.arange(1, horizon + 1) * mean_variance  # variance of the h-step log return
        daily = np.diff(cumulative, prepend=0.0)
        # Each A_h comes from its own regression, so nothing forces h A_h to grow with h; a day
        # without variance would be a step with no risk at all, so it takes A_h instead.
        return np.where(daily > 0, daily, mean_variance), estimate

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Price samples ``(S, H, 1)`` of the close, from the context's last 23 candles."""
        require_key(key, "HarRV.forecast")
        candles, asset = self._read_candles(context, horizon, num_samples)
        daily, estimate = self._daily_variance(candles, asset, horizon)
        nu = estimate.nu
        shocks = numpy_rng(key).standard_t(nu, size=(num_samples, horizon)) * math.sqrt((nu - 2.0) / nu)
        log_returns = estimate.mean_return + np.sqrt(daily) * shocks  # (S, H)
        paths = candles[-1, 3] * np.exp(np.cumsum(log_returns, axis=1))
        return Forecast(paths[:, :, None], self._columns, asset=asset)



