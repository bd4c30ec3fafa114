"""The held-out part of each asset's fit rows: where the wrappers fit and forecast."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.forecasters._holdout import holdout_start, holdout_windows, rows_before_holdout


def _frame(lengths):
    return pd.concat([pd.DataFrame({"asset": name, "timestamp": np.arange(n, dtype=float), "x0": np.arange(n) + 1000.0 * i})
                      for i, (name, n) in enumerate(lengths.items())], ignore_index=True)


def test_each_asset_keeps_its_rows_before_its_own_holdout():
    frame = _frame({"a": 100, "b": 50})
    assert holdout_start(100, 0.2) == 80 and holdout_start(50, 0.2) == 40 and holdout_start(5, 0.5) == 3  # round(2.5) is 2: 2 rows held out
    head = rows_before_holdout(frame, 0.2, 10, "model", "to calibrate")
    assert head.groupby("asset").size().to_dict() == {"a": 80, "b": 40}
    with pytest.raises(ValueError, match=r"asset 'b' has 50 rows; keeping 0.2 of them to calibrate leaves 40, fewer than min_context=45"):
        rows_before_holdout(frame, 0.2, 45, "model", "to calibrate")


def test_windows_are_the_held_out_origins_thinned_evenly_with_their_targets():
    frame = _frame({"a": 100})
    windows = holdout_windows(frame, ["x0"], 0.2, 10, horizon=3, max_windows=1000, context_length=30)
    origins = [int(context["timestamp"].iloc[-1]) + 1 for context, _ in windows]
    assert origins == list(range(80, 98))  # origins 80..97: the last one's 3 targets end at row 99
    for (context, observed), origin in zip(windows, origins):
        assert len(context) == 30 and observed.tolist() == [[origin], [origin + 1], [origin + 2]]
    thinned = holdout_windows(frame, ["x0"], 0.2, 10, horizon=3, max_windows=4, context_length=None)
    assert [int(c["timestamp"].iloc[-1]) + 1 for c, _ in thinned] == [80, 86, 91, 97]
    assert all(c["timestamp"].iloc[0] == 0 for c, _ in thinned)  # None: the whole history
