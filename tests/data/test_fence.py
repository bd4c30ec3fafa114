"""TimeFence and trained_through."""

import pandas as pd
import pytest

from chaosfm.data import LeakageError, TimeFence, trained_through, trained_through_from_json, trained_through_to_json


def frame():
    stamps = pd.date_range("2020-01-01", periods=10, freq="D")
    return pd.DataFrame({"asset": ["a"] * 10 + ["b"] * 10, "timestamp": list(stamps) * 2, "x0": range(20)})


def test_trained_through_per_asset_and_json_round_trip():
    record = trained_through(frame().iloc[:15])
    assert record == {"a": pd.Timestamp("2020-01-10"), "b": pd.Timestamp("2020-01-05")}
    assert trained_through_from_json(trained_through_to_json(record)) == record


def test_fence_train_fresh_and_check():
    fence = TimeFence("2020-01-04", embargo=2)
    data = frame()
    assert len(fence.train(data)) == 8
    fresh = fence.fresh(data)
    assert fresh["timestamp"].min() == pd.Timestamp("2020-01-07") and len(fresh) == 8
    fence.check(fence.train(data), "model.fit")
    with pytest.raises(LeakageError, match="model.fit.*2020-01-05"):
        fence.check(data, "model.fit")


def test_per_asset_cutoffs_and_artifact_check():
    fence = TimeFence({"a": "2020-01-02", "b": "2020-01-09"})
    assert len(fence.train(frame())) == 2 + 9
    with pytest.raises(LeakageError, match="asset 'a'"):
        fence.check_trained_through({"a": pd.Timestamp("2020-01-03")}, "tokenizer")
