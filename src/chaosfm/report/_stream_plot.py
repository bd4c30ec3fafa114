"""The telemetry figure of ``chaosfm stream``: the series with the predictor's one-step forecast and
its 10-90% interval, the Hölder exponent, CUSUM against its threshold and the kernel weights, all
against the data's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.report._plots import plt, time_axis


def stream_times(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, str]:
    """The x values of stream rows and what they are.

    Args:
        rows: telemetry or prediction rows, each with ``timestamp`` (text as read; empty or None
            when the input has none) and ``row`` (the observation's 0-based data row).

    Returns:
        ``(x, kind)``: datetime64 values and ``"date"`` when every timestamp reads as a date;
        floats and ``"numeric"`` when every one is a number (a trajectory's time); else the data
        rows and ``"row"``.
    """
    stamps = pd.Series([r.get("timestamp") for r in rows], dtype=object).replace("", None)
    if len(stamps) and stamps.notna().all():
        numbers = pd.to_numeric(stamps, errors="coerce")
        if numbers.notna().all():
            return numbers.to_numpy(np.float64), "numeric"
        try:
            # Timestamps arrive as the text a feed sent; each line may spell its date its own way.
            return pd.to_datetime(stamps, format="mixed").to_numpy(), "date"
        except (ValueError, TypeError):
            pass
    return np.asarray([r.get("row", i) for i, r in enumerate(rows)], dtype=np.float64), "row"


def interval_keys(row: dict[str, Any]) -> tuple[str, str]:
    """The keys of a prediction row's lowest and highest quantile (``"0.1"``, ``"0.9"``).

    Raises:
        ValueError: the row has fewer than two quantile columns.
    """
    levels = {}
    for key in row:
        try:
            level = float(key)
        except (TypeError, ValueError):
            continue
        if 0.0 < level < 1.0:
            levels[level] = key
    if len(levels) < 2:
        raise ValueError(f"a prediction row needs two quantile columns (e.g. '0.1', '0.9'); its keys: {list(row)}")
    return levels[min(levels)], levels[max(levels)]


def stream_telemetry(telemetry: Sequence[dict[str, Any]], predictions: Sequence[dict[str, Any]]) -> plt.Figure:
    """Four panels over the stream's time (shared x axis).

    1. The observed value and the prediction of it made one step before, with that prediction's
       interval (the lowest and highest quantile columns, ``0.1`` and ``0.9``, of the previous row,
       drawn at the row they predict), and a red line at each regime-change alarm.
    2. The Hölder exponent. 3. The CUSUM statistic and its threshold (error units).
    4. The orchestrator's kernel weights, stacked (they sum to 1).

    Args:
        telemetry: ``telemetry.csv`` rows (``STREAM_TELEMETRY_COLUMNS``): ``hoelder``,
            ``cusum_statistic``, ``cusum_threshold``, ``regime_change``, ``weight_<kernel>``.
        predictions: ``predictions.csv`` rows (``PREDICTION_COLUMNS``), one per telemetry row:
            ``observed``, ``prediction_next`` and the quantile columns ``0.1``, ``0.9``.

    Returns:
        The figure. The x axis is dates when the stream's timestamps are dates, the data's numeric
        time when they are numbers, and the input's row numbers only when there are neither.
    """
    if not telemetry:
        raise ValueError("no telemetry row to plot: the stream scored no observation")
    x, kind = stream_times(telemetry)
    px, _ = stream_times(predictions) if predictions else (x[:0], kind)
    figure, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    top = axes[0]
    if len(predictions):
        top.plot(px, [r["observed"] for r in predictions], lw=0.8, color="black", label="observed")
        # Row i predicts row i + 1: shift the forecast onto the time it forecasts.
        low_key, high_key = interval_keys(predictions[0])
        low = np.array([r[low_key] for r in predictions[:-1]], dtype=np.float64)
        high = np.array([r[high_key] for r in predictions[:-1]], dtype=np.float64)
        top.fill_between(px[1:], low, high, color="#0072b2", alpha=0.25, linewidth=0,
                         label=f"{100 * float(low_key):g}-{100 * float(high_key):g}% interval (made a step before)")
        top.plot(px[1:], [r["prediction_next"] for r in predictions[:-1]], lw=0.8, color="#0072b2",
                 label="prediction (made a step before)")
    for stamp, row in zip(x, telemetry):
        if row["regime_change"]:
            top.axvline(stamp, color="red", lw=0.5, alpha=0.5)
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8)
    axes[1].plot(x, [r["hoelder"] for r in telemetry], lw=0.8)
    axes[1].set_ylabel("Hölder h")
    axes[2].plot(x, [r["cusum_statistic"] for r in telemetry], lw=0.8, label="CUSUM")
    axes[2].plot(x, [r["cusum_threshold"] for r in telemetry], lw=0.8, label="threshold")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("error units")
    kernels = [key.removeprefix("weight_") for key in telemetry[0] if key.startswith("weight_")]
    weights = np.array([[r[f"weight_{k}"] for k in kernels] for r in telemetry], dtype=np.float64)
    axes[3].stackplot(x, weights.T, labels=kernels)
    axes[3].set_ylim(0, 1)
    axes[3].set_ylabel("weights")
    axes[3].legend(loc="upper left", fontsize=8, ncol=4)
    if kind == "row":
        axes[3].set_xlabel("row of the input (the stream has no timestamps)")
    else:
        time_axis(axes[3], x)
    figure.tight_layout()
    return figure
