"""Telemetry: one flat record per step and the CSV it goes to (``chaosfm.report.stream_telemetry``
draws it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from chaosfm.predictor._draws import KERNELS
from chaosfm.predictor._predictor import SLOW_PARTS, PredictorOutput

# Each a bool per step; docs/predictor.md#flags-and-modes says what raises and clears each.
FLAGS = ("sinkhorn_fallback", "degraded_inference", "emergency", "regime_change", "mode_collapse", "dgm_suspended",
         "high_volatility", "crisis", "residual_invalid")
_VALUES = ("hoelder", "cusum_statistic", "cusum_threshold", "distance_to_alarm", "kurtosis", "dgm_entropy",
           "free_energy", "error")
TELEMETRY_COLUMNS = (
    "step", "observed", "prediction", *(f"prediction_{k}" for k in KERNELS), *(f"weight_{k}" for k in KERNELS),
    *(f"std_{k}" for k in KERNELS), "std_mixture", *_VALUES, "sinkhorn_iterations", "sinkhorn_converged", *FLAGS,
    "warm", "refreshed", "step_seconds",
)
"""The keys of :func:`telemetry_record`, in order (the header of an empty telemetry.csv)."""


def telemetry_record(step: int, out: PredictorOutput, observed: float, wall_time: float) -> dict[str, Any]:
    """Flatten one step's output (host values) into a telemetry row."""
    row: dict[str, Any] = {"step": step, "observed": float(observed)}
    row["prediction"] = float(out.prediction)
    for name, value in zip(KERNELS, np.asarray(out.kernel_predictions)):
        row[f"prediction_{name}"] = float(value)
    for name, value in zip(KERNELS, np.asarray(out.weights)):
        row[f"weight_{name}"] = float(value)
    # Each kernel's predictive spread beside the mixture's: a kernel far narrower than the
    # realised |error| under-covers whatever weight it gets.
    for name, value in zip(KERNELS, np.asarray(out.kernel_stds)):
        row[f"std_{name}"] = float(value)
    row["std_mixture"] = float(out.mixture_std)
    for field in _VALUES:
        row[field] = float(getattr(out, field))
    row["sinkhorn_iterations"] = int(out.sinkhorn_iterations)
    row["sinkhorn_converged"] = bool(out.sinkhorn_converged)
    for flag in FLAGS:
        row[flag] = bool(getattr(out, flag))
    row["warm"] = bool(out.warm)
    # Which slow parts were recomputed this step (the others are cached, see refresh_every).
    row["refreshed"] = "+".join(p for j, p in enumerate(SLOW_PARTS) if int(out.refreshed) >> j & 1)
    row["step_seconds"] = float(wall_time)
    return row
