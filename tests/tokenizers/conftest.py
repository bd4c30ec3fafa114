"""Fixtures of the tokenizer tests: synthetic candles and a two-channel trajectory."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import validate

from ._data import market_frame


@pytest.fixture(scope="session")
def candles():
    return market_frame()


@pytest.fixture(scope="session")
def trajectory():
    """Two channels of a noisy oscillator with a nonzero mean, two assets."""
    rng = np.random.default_rng(1)
    t = np.arange(400) * 0.05
    parts = []
    for asset, phase in (("p", 0.0), ("q", 1.0)):
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": t,
            "x0": 8 * np.sin(t + phase) + 0.1 * rng.standard_normal(len(t)),
            "x1": 20 + 5 * np.cos(1.3 * t + phase),
        }))
    return validate(pd.concat(parts, ignore_index=True))
