"""Small synthetic candles and tiny tokenizer settings, so the tokenizer tests stay fast."""

import numpy as np
import pandas as pd

from chaosfm.data import validate

# Receptive field 1 + 2 * (1 + 2) = 7 candles; a few milliseconds per training step.
TINY = dict(width=8, decoder_width=8, dilations=(1, 2), window=16, batch_size=4, learning_rate=1e-2)
# One FSQ config shared by every test that fits FSQ, so its training step compiles once.
TINY_FSQ = dict(levels=(4, 3, 2), **TINY)


def market_frame(rows=300, assets=("a", "b"), seed=0, start="2001-01-01"):
    """Random-walk daily candles with fat-tailed returns, one block per asset, validated."""
    rng = np.random.default_rng(seed)
    parts = []
    for asset in assets:
        returns = 0.01 * rng.standard_t(4, rows)
        close = 100 * np.exp(np.cumsum(returns))
        previous = np.r_[100.0, close[:-1]]
        open_ = previous * np.exp(0.002 * rng.standard_normal(rows))
        high = np.maximum(open_, close) * np.exp(np.abs(0.004 * rng.standard_normal(rows)))
        low = np.minimum(open_, close) * np.exp(-np.abs(0.004 * rng.standard_normal(rows)))
        parts.append(pd.DataFrame({
            "asset": asset,
            "timestamp": pd.bdate_range(start, periods=rows),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.uniform(1e6, 2e6, rows),
        }))
    return validate(pd.concat(parts, ignore_index=True))
