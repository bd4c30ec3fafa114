"""loss.png: the training and held-out loss curves drawn from log.jsonl records."""

import io

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from chaosfm.report import loss_curve, smoothed


def test_smoothing_is_the_debiased_exponential_average():
    values = np.random.default_rng(0).lognormal(size=50)
    # pandas' adjusted EWM weighs value t-i by weight**i and normalises: the debiased average.
    reference = pd.Series(values).ewm(alpha=1 - 0.9, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(smoothed(values, 0.9), reference, rtol=1e-12)
    assert smoothed(values, 0.0).tolist() == values.tolist()
    with pytest.raises(ValueError, match="outside"):
        smoothed(values, 1.0)


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_loss_curve_draws_training_and_held_out_records_and_skips_events():
    records = [{"step": s, "loss": 3.0 / s, "lr": 1e-3} for s in range(1, 21)]
    records += [{"step": s, "val_loss": 3.5 / s} for s in (5, 10, 15, 20)]
    records += [{"step": 20, "event": "interrupted"}]
    image = _decode(loss_curve(records, loss_label="cross-entropy (nats per code)"))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # A negative loss (a JEPA's) draws on a linear axis instead of failing.
    assert _decode(loss_curve([{"step": 1, "loss": -0.5}, {"step": 2, "loss": -0.7, "val_loss": -0.6}])).size
    with pytest.raises(ValueError, match="no 'loss' or 'val_loss'"):
        loss_curve([{"step": 1, "event": "interrupted"}])
