"""Forecast metrics: stateless NumPy functions over batched arrays.

Dimension letters: S samples, Q quantile levels, H horizon steps, T in-sample (history) steps,
C channels. ``...`` is any number of batch dimensions (for a :class:`Forecast`, ``(H, C)``).

Conventions shared by every function here:

* Sample and quantile axes come first, as in ``Forecast.samples``: ``samples`` is ``(S, ...)``,
  ``quantile_forecasts`` is ``(Q, ...)`` and ``observed`` is ``(...)``. The trailing shape must
  match exactly; nothing is silently broadcast (a ``(H,)`` against ``(H, C)`` mix-up is an error).
* Point metrics (``rmse``, ``mae``, ``smape``, ``mase``, ``coverage``, ``directional_accuracy``)
  average over ``axis`` (default ``None``: every element, giving a scalar).
* Any statistic that scales a metric (MASE's denominator, the VPT normaliser) comes from data at or
  before the forecast cutoff, passed in explicitly.
* Shapes are validated; a ``ValueError`` names the argument and its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Axis = int | tuple[int, ...] | None


def _as_float_array(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be finite; got NaN or inf in an array of shape {array.shape}"
        )
    return array


def _require_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}; they must match"
        )


def _require_leading_axis(
    stacked: np.ndarray, stacked_name: str, axis_name: str, observed: np.ndarray
) -> None:
    if stacked.ndim != observed.ndim + 1 or stacked.shape[1:] != observed.shape:
        raise ValueError(
            f"{stacked_name} must have shape ({axis_name}, *observed.shape) = "
            f"({axis_name}, {', '.join(map(str, observed.shape))}); got {stacked.shape}"
        )
    if stacked.shape[0] < 1:
        raise ValueError(
            f"{stacked_name} needs at least one entry along axis 0; got shape {stacked.shape}"
        )


def _check_levels(levels: Any, count: int, name: str = "levels") -> np.ndarray:
    array = np.asarray(levels, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"{name} must have shape ({count},), one per quantile forecast; got {array.shape}"
        )
    if np.any((array <= 0) | (array >= 1)):
        raise ValueError(f"{name} must lie strictly inside (0, 1); got {array.tolist()}")
    return array


# --------------------------------------------------------------------------------------------------
# Probabilistic scores


def crps(samples: Any, observed: Any) -> np.ndarray:
    """Continuous ranked probability score of a sample (ensemble) forecast, per element.

    ``CRPS(F, y) = E|X - y| - 0.5 E|X - X'|`` with ``X, X'`` independent draws of ``F``
    (Gneiting & Raftery 2007, eq. 21). With ``S`` samples we use the *fair* estimator, where the
    second expectation runs over the ``S (S - 1)`` pairs of distinct samples (Ferro 2014; Zamo &
    Naveau 2018). It is unbiased for the CRPS of the distribution the samples were drawn from, so
    forecasters evaluated with different sample counts compare fairly; the plain empirical-CDF form
    (scoringrules' default ``"qd"``, equal to ``"nrg"``) is biased upwards by ``E|X - X'| / (2S)``.
    It is computed via scoringrules' ``"pwm"`` estimator, algebraically identical to ``"fair"``
    but ``O(S log S)`` instead of ``O(S^2)``.

    Args:
        samples: ``(S, ...)`` sample paths, sample axis first (``Forecast.samples``).
        observed: ``(...)`` observed values.

    Returns:
        ``(...)`` CRPS of each element, in the units of ``observed``. With one sample the fair
        estimator is undefined and the CRPS of a point mass, ``|x - y|``, is returned.
    """
    samples = _as_float_array(samples, "samples")
    observed = _as_float_array(observed, "observed")
    _require_leading_axis(samples, "samples", "S", observed)
    if samples.shape[0] == 1:
        return np.abs(samples[0] - observed)
    import scoringrules  # on first use: it imports numba (about 0.4 s), which no step of a stream needs

    # Backend pinned: scoringrules would otherwise use whichever backend is active (jax, numba).
    score = scoringrules.crps_ensemble(
        observed, samples, m_axis=0, estimator="pwm", backend="numpy"
    )
    return np.asarray(score, dtype=np.float64)


def pinball(quantile_forecasts: Any, observed: Any, levels: Sequence[float]) -> np.ndarray:
    """Pinball (quantile) loss of each quantile forecast, per level and element.

    ``rho_tau(y, q) = max(tau (y - q), (tau - 1)(y - q))`` (Koenker & Bassett 1978).

    Args:
        quantile_forecasts: ``(Q, ...)`` forecast quantiles, one slice per level.
        observed: ``(...)`` observed values.
        levels: ``(Q,)`` quantile levels in ``(0, 1)``.

    Returns:
        ``(Q, ...)`` loss, in the units of ``observed``.
    """
    quantile_forecasts = _as_float_array(quantile_forecasts, "quantile_forecasts")
    observed = _as_float_array(observed, "observed")
    _require_leading_axis(quantile_forecasts, "quantile_forecasts", "Q", observed)
    tau = _check_levels(levels, quantile_forecasts.shape[0])
    tau = tau.reshape((-1,) + (1,) * observed.ndim)
    error = observed[None] - quantile_forecasts
    return np.maximum(tau * error, (tau - 1.0) * error)


def wql(quantile_forecasts: Any, observed: Any, levels: Sequence[float]) -> float:
    """Weighted quantile loss, as reported by GluonTS and Chronos (Ansari et al. 2024, sec. 5.3).

    ``WQL = mean_tau [ 2 sum(rho_tau(y, q_tau)) / sum(|y|) ]``, the sums running over every
    element of ``observed`` (all steps and series pooled), so it is scale-free across a dataset.

    Args:
        quantile_forecasts: ``(Q, ...)`` forecast quantiles.
        observed: ``(...)`` observed values; ``sum(|observed|)`` must be positive.
        levels: ``(Q,)`` quantile levels in ``(0, 1)``.

    Returns:
        Scalar WQL (unitless; 0 is perfect).

    Raises:
        ValueError: on a shape mismatch, or when every observed value is zero.
    """
    loss = pinball(quantile_forecasts, observed, levels)
    denominator = np.abs(np.asarray(observed, dtype=np.float64)).sum()
    if denominator == 0:
        raise ValueError("observed is all zeros, so sum(|observed|) = 0 and WQL is undefined")
    per_level = 2.0 * loss.reshape(loss.shape[0], -1).sum(axis=1) / denominator
    return float(per_level.mean())


def coverage(samples: Any, observed: Any, level: float = 0.8, *, axis: Axis = None) -> np.ndarray:
    """Fraction of observations inside the central ``level`` interval of the samples.

    The interval is ``[q_{(1 - level)/2}, q_{(1 + level)/2}]`` with sample quantiles taken as in
    ``Forecast.quantile`` (NumPy's linear interpolation), both ends included. A calibrated
    forecast has coverage close to ``level``.

    Args:
        samples: ``(S, ...)`` sample paths.
        observed: ``(...)`` observed values.
        level: nominal coverage in ``(0, 1)``.
        axis: axes of ``observed`` to average over; ``None`` averages everything.

    Returns:
        Coverage in ``[0, 1]``: a scalar, or an array if ``axis`` leaves dimensions.
    """
    samples = _as_float_array(samples, "samples")
    observed = _as_float_array(observed, "observed")
    _require_leading_axis(samples, "samples", "S", observed)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly inside (0, 1); got {level}")
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    inside = (observed >= low) & (observed <= high)
    return np.mean(inside, axis=axis)


# --------------------------------------------------------------------------------------------------
# Point scores


def _point_pair(point: Any, observed: Any) -> tuple[np.ndarray, np.ndarray]:
    point = _as_float_array(point, "point")
    observed = _as_float_array(observed, "observed")
    _require_same_shape(point, "point", observed, "observed")
    if point.size == 0:
        raise ValueError(f"point and observed are empty (shape {point.shape})")
    return point, observed


def rmse(point: Any, observed: Any, *, axis: Axis = None) -> np.ndarray:
    """Root mean squared error, ``sqrt(mean((point - observed)^2))`` over ``axis``.

    Args:
        point: ``(...)`` point forecast (e.g. ``Forecast.median()``, ``(H, C)``).
        observed: ``(...)`` observed values, same shape.
        axis: axes to average over; ``None`` averages everything to a scalar.

    Returns:
        RMSE in the units of ``observed``.
    """
    point, observed = _point_pair(point, observed)
    return np.sqrt(np.mean((point - observed) ** 2, axis=axis))


def mae(point: Any, observed: Any, *, axis: Axis = None) -> np.ndarray:
    """Mean absolute error, ``mean(|point - observed|)`` over ``axis``.

    Args:
        point: ``(...)`` point forecast.
        observed: ``(...)`` observed values, same shape.
        axis: axes to average over; ``None`` averages everything to a scalar.

    Returns:
        MAE in the units of ``observed``.
    """
    point, observed = _point_pair(point, observed)
    return np.mean(np.abs(point - observed), axis=axis)


def smape(point: Any, observed: Any, *, axis: Axis = None) -> np.ndarray:
    """Symmetric mean absolute percentage error on the 0–200 scale (Makridakis 1993; M4).

    ``sMAPE = mean(200 |f - y| / (|f| + |y|))``; an element with ``f = y = 0`` contributes 0.

    Args:
        point: ``(...)`` point forecast.
        observed: ``(...)`` observed values, same shape.
        axis: axes to average over; ``None`` averages everything to a scalar.

    Returns:
        sMAPE in ``[0, 200]``.
    """
    point, observed = _point_pair(point, observed)
    numerator = 200.0 * np.abs(point - observed)
    denominator = np.abs(point) + np.abs(observed)
    # denominator == 0 only when numerator == 0 too; that perfect forecast of zero scores 0.
    ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return np.mean(ratio, axis=axis)


def mase(
    point: Any, observed: Any, insample: Any, season: int = 1, *, axis: Axis = None
) -> np.ndarray:
    """Mean absolute scaled error (Hyndman & Koehler 2006, sec. 3.4).

    Each error is divided by the in-sample MAE of the seasonal naive forecast,
    ``scale = mean_t |insample[t] - insample[t - season]|``, computed per series *only from
    ``insample``*: the history at or before the cutoff, never the evaluation window.

    Args:
        point: ``(H, ...)`` point forecast, time first.
        observed: ``(H, ...)`` observed values.
        insample: ``(T, ...)`` history up to the cutoff, time first, same trailing shape;
            needs ``T > season``.
        season: seasonal period of the naive forecast (1 = random walk).
        axis: axes of the scaled errors ``(H, ...)`` to average over; ``None`` averages everything,
            which for equal horizons is the mean of the per-series MASE values.

    Returns:
        MASE (unitless; 1 means as good in-horizon as the naive forecast was in-sample).

    Raises:
        ValueError: on a shape mismatch, ``insample`` shorter than ``season + 1`` steps, or a
            series whose in-sample scale is 0 (a constant history gives no scale).
    """
    point, observed = _point_pair(point, observed)
    insample = _as_float_array(insample, "insample")
    if not isinstance(season, (int, np.integer)) or season < 1:
        raise ValueError(f"season must be a positive integer; got {season!r}")
    if point.ndim < 1:
        raise ValueError(f"point must have a leading time axis (H, ...); got shape {point.shape}")
    if insample.ndim != point.ndim or insample.shape[1:] != point.shape[1:]:
        raise ValueError(
            f"insample must have shape (T, {', '.join(map(str, point.shape[1:]))}) to match point "
            f"{point.shape}; got {insample.shape}"
        )
    if insample.shape[0] <= season:
        raise ValueError(
            f"insample has {insample.shape[0]} steps; the seasonal naive scale with "
            f"season={season} needs at least {season + 1}"
        )
    scale = np.mean(np.abs(insample[season:] - insample[:-season]), axis=0)
    if np.any(scale == 0):
        raise ValueError(
            f"insample is constant at lag season={season} for {int(np.sum(scale == 0))} series "
            "(scale 0), so MASE is undefined there"
        )
    return np.mean(np.abs(point - observed) / scale, axis=axis)


def directional_accuracy(
    point: Any, observed: Any, last_value: Any, *, axis: Axis = None
) -> np.ndarray:
    """Fraction of elements where the forecast moves the same way as the truth from ``last_value``.

    A hit is ``sign(point - last_value) == sign(observed - last_value)``; a forecast of no change
    counts as a hit only when the truth also did not change.

    Args:
        point: ``(...)`` point forecast, e.g. ``(H, C)``.
        observed: ``(...)`` observed values, same shape.
        last_value: the last value at the cutoff, broadcastable to ``point`` (e.g. ``(C,)``).
        axis: axes to average over; ``None`` averages everything to a scalar.

    Returns:
        Hit rate in ``[0, 1]``.
    """
    point, observed = _point_pair(point, observed)
    last_value = _as_float_array(last_value, "last_value")
    try:
        if np.broadcast_shapes(last_value.shape, point.shape) != point.shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"last_value has shape {last_value.shape}, which does not broadcast to point's shape "
            f"{point.shape}"
        ) from None
    hits = np.sign(point - last_value) == np.sign(observed - last_value)
    return np.mean(hits, axis=axis)


# --------------------------------------------------------------------------------------------------
# Chaotic systems


def normalised_error(forecast: Any, truth: Any, scale: Any = None) -> np.ndarray:
    """Per-step normalised RMSE ``e(t) = sqrt(mean_c ((f_tc - y_tc) / scale_c)^2)``.

    Args:
        forecast: ``(H, C)`` point forecast (a ``(H,)`` array is one channel).
        truth: ``(H, C)`` true trajectory.
        scale: ``(C,)`` (or scalar) per-channel standard deviation of the attractor, from
            training/context data. ``None`` uses the standard deviation of ``truth`` over time,
            a fallback that reads the evaluation window.

    Returns:
        ``(H,)`` error at each step.
    """
    forecast = _as_float_array(forecast, "forecast")
    truth = _as_float_array(truth, "truth")
    if forecast.ndim == 1:
        forecast = forecast[:, None]
    if truth.ndim == 1:
        truth = truth[:, None]
    if forecast.ndim != 2 or forecast.shape[0] < 1:
        raise ValueError(f"forecast must have shape (H, C) with H >= 1; got {forecast.shape}")
    _require_same_shape(forecast, "forecast", truth, "truth")
    if scale is None:
        scale = truth.std(axis=0)
    scale = _as_float_array(scale, "scale")
    if scale.ndim == 0:
        scale = np.full(truth.shape[1], float(scale))
    if scale.shape != (truth.shape[1],):
        raise ValueError(
            f"scale must have shape ({truth.shape[1]},), one per channel; got {scale.shape}"
        )
    if np.any(scale <= 0):
        raise ValueError(f"scale must be positive for every channel; got {scale.tolist()}")
    return np.sqrt(np.mean(((forecast - truth) / scale) ** 2, axis=1))


def valid_prediction_time(
    forecast: Any,
    truth: Any,
    lyapunov_exponent: float,
    threshold: float = 0.4,
    *,
    dt: float = 1.0,
    scale: Any = None,
) -> float:
    """How long a forecast of a chaotic system stays valid, in Lyapunov times.

    The normalised error at step ``t = 1..H`` (time ``t dt`` after the cutoff) is
    ``e(t) = sqrt(mean_c ((f_tc - y_tc) / scale_c)^2)``. With ``t*`` the first step where
    ``e(t) > threshold``, the forecast stayed valid for ``t* - 1`` steps, and

        ``VPT = (t* - 1) dt lambda_max``   (``H dt lambda_max`` if the threshold is never crossed).

    This is the valid prediction time of Pathak et al. (2018, PRL 120, 024102, threshold 0.4),
    in the per-channel-normalised form of Vlachas et al. (2020, Neural Networks 126) used by the
    dysts benchmarks (Gilpin 2021, NeurIPS Datasets & Benchmarks).

    Args:
        forecast: ``(H, C)`` point forecast (a ``(H,)`` array is one channel); row 0 is the first
            step after the cutoff.
        truth: ``(H, C)`` true trajectory at the same steps.
        lyapunov_exponent: largest Lyapunov exponent ``lambda_max`` of the system, per unit time,
            positive.
        threshold: error level at which the forecast stops being valid.
        dt: time between consecutive steps.
        scale: ``(C,)`` per-channel standard deviation of the attractor; pass it from the training
            or context data. When ``None`` the standard deviation of ``truth`` over the ``H`` steps
            is used instead: that reads the evaluation window, and over a short horizon it is a
            poor estimate of the attractor's spread, so prefer passing ``scale``.

    Returns:
        VPT in Lyapunov times (multiply by ``1 / lambda_max`` for model time units).
    """
    if not np.isfinite(lyapunov_exponent) or lyapunov_exponent <= 0:
        raise ValueError(f"lyapunov_exponent must be positive and finite; got {lyapunov_exponent}")
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be positive and finite; got {dt}")
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be positive; got {threshold}")
    error = normalised_error(forecast, truth, scale)
    exceeded = np.flatnonzero(error > threshold)
    valid_steps = exceeded[0] if exceeded.size else error.shape[0]  # index of t* is t* - 1
    return float(valid_steps * dt * lyapunov_exponent)
