"""``loss.png``: a training run's loss curve, read from its ``log.jsonl`` records.

The training loss of each logged step is drawn raw and smoothed (an exponential moving average,
debiased as TensorBoard's smoothing is, so the first points are not pulled towards 0), and the
held-out loss (``val_loss``, on training rows the gradient never saw) as points joined by a line.
The y axis is logarithmic when every value drawn is positive, so the late, slow part of a curve
is as readable as its first drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from chaosfm.report._plots import plt, to_png

__all__ = ["loss_curve", "smoothed"]


def smoothed(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Debiased exponential moving average of ``values`` (``weight`` on the past, in [0, 1)).

    ``out[t] = ema[t] / (1 - weight ** (t + 1))`` with ``ema[t] = weight * ema[t-1] + (1 - weight)
    * values[t]`` and ``ema[-1] = 0``: the same curve TensorBoard draws.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight {weight} is outside [0, 1)")
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    ema = 0.0
    for t, value in enumerate(values):
        ema = weight * ema + (1 - weight) * value
        out[t] = ema / (1 - weight ** (t + 1))
    return out


def loss_curve(
    records: Iterable[Mapping[str, Any]], *, loss_label: str = "loss", title: str = "training loss"
) -> bytes:
    """Training loss (raw and smoothed) and held-out loss against step, as PNG bytes.

    Args:
        records: ``log.jsonl`` entries; those with ``loss`` give the training curve, those with
            ``val_loss`` the held-out one (one record may hold both); others (events) are skipped.
        loss_label: the y axis label with its unit, e.g. ``"cross-entropy (nats per code)"``.
        title: the figure's title.

    Raises:
        ValueError: no record holds a ``loss`` or a ``val_loss``.
    """
    records = list(records)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and _finite(r["loss"])]
    held = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r and _finite(r["val_loss"])]
    if not train and not held:
        raise ValueError("log.jsonl holds no 'loss' or 'val_loss' record: nothing to plot")
    figure, axis = plt.subplots(figsize=(7, 3.4))
    drawn: list[float] = []
    if train:
        steps, losses = (np.asarray(column, np.float64) for column in zip(*train))
        axis.plot(steps, losses, color="#0072b2", linewidth=0.7, alpha=0.4, label="training loss (logged batch)")
        axis.plot(steps, smoothed(losses), color="#0072b2", linewidth=1.5, label="training loss (smoothed)")
        drawn += list(losses)
    if held:
        steps, losses = (np.asarray(column, np.float64) for column in zip(*held))
        axis.plot(steps, losses, color="#d55e00", linewidth=1.2, marker="o", markersize=3,
                  label="held-out loss (training rows kept out of the gradient)")
        drawn += list(losses)
    if min(drawn) > 0:
        axis.set_yscale("log")
        # Plain numbers (3.52, not 3.52 x 10^0); a curve within one decade has no major tick
        # inside it, so its minor ticks carry the labels.
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_formatter(plain if max(drawn) / min(drawn) < 10 else NullFormatter())
    axis.set_xlabel("step (optimizer updates)")
    axis.set_ylabel(loss_label)
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)
    return to_png(figure)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and bool(np.isfinite(value))
