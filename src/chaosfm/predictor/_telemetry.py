"""Telemetry: one flat record per step, the CSV it goes to, and the telemetry plot."""

from __future__ import annotations

import io

from collections.abc import Sequence
from typing import Any

import numpy as np

from chaosfm.predictor._predictor import KERNELS, SLOW_PARTS, PredictorOutput

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


def telemetry_png(rows: Sequence[dict[str, Any]]) -> bytes:
    """Price, Hölder exponent, CUSUM against its threshold and the kernel weights over time (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    axes[0].plot(steps, [r["observed"] for r in rows], lw=0.8, label="observed")
    axes[0].plot(steps, [r["prediction"] for r in rows], lw=0.8, alpha=0.7, label="prediction (made a step before)")
    alarms = [r["step"] for r in rows if r["regime_change"]]
    for s in alarms:
        axes[0].axvline(s, color="red", lw=0.5, alpha=0.5)
    axes[0].set_ylabel("value")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].plot(steps, [r["hoelder"] for r in rows], lw=0.8)
    axes[1].set_ylabel("Hölder h")
    axes[2].plot(steps, [r["cusum_statistic"] for r in rows], lw=0.8, label="CUSUM")
    axes[2].plot(steps, [r["cusum_threshold"] for r in rows], lw=0.8, label="threshold")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("error units")
    weights = np.array([[r[f"weight_{k}"] for k in KERNELS] for r in rows])
    axes[3].stackplot(steps, weights.T, labels=KERNELS)
    axes[3].set_ylim(0, 1)
    axes[3].set_ylabel("weights")
    axes[3].legend(loc="upper left", fontsize=8, ncol=4)
    axes[3].set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
