"""A real ``chaosfm evaluate`` run folder, made once per session, for the report's tests."""

import numpy as np
import pandas as pd
import pytest

ASSETS = ("AAA", "BBB")


def market_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Two assets of ``n`` daily OHLCV rows each (geometric random walks), as a user's CSV holds them."""
    rng = np.random.default_rng(seed)
    parts = []
    for asset in ASSETS:
        close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory):
    """``(out, metrics)`` of a small baselines-only evaluation of two assets (three models, a few
    seconds): its ``report.html`` is what a user of ``chaosfm evaluate`` reads."""
    from chaosfm.jobs import evaluate

    root = tmp_path_factory.mktemp("report")
    market_frame().to_csv(root / "market.csv", index=False)
    config = evaluate.read(None, {
        "datasets": [{"name": str(root / "market.csv")}],
        "models": ["random_walk", "last_value", "ar"],
        "protocol": {"horizon": 3, "num_samples": 8, "context_length": 30, "min_context": 25, "step": 3,
                     "embargo": 2},
        "out": str(root / "eval"),
    })
    return root / "eval", evaluate.run(config)
