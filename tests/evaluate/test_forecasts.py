"""The kept forecasts: one row per step and column, quantile columns named "0.1", values float32."""

import numpy as np
import pandas as pd

from chaosfm.evaluate import Forecast, ForecastTable, quantile_names

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def test_one_row_per_step_and_column_in_window_order():
    rng = np.random.default_rng(0)
    table = ForecastTable(LEVELS)
    stamps = pd.Series(pd.date_range("2024-01-01", periods=6, freq="D"))
    for model, start in (("a", 0), ("b", 3)):
        samples = rng.normal(size=(7, 3, 2))
        forecast = Forecast(samples, ["c0", "c1"], point=samples[0])
        table.add(model=model, asset="x", window_class="fresh", forecast=forecast,
                  observed=np.arange(6.0).reshape(3, 2), timestamps=stamps.iloc[start : start + 3])
    frame = table.frame()
    assert quantile_names(LEVELS) == ["0.1", "0.25", "0.5", "0.75", "0.9"]
    assert list(frame.columns) == ["asset", "origin", "step", "timestamp", "column", "model", "window_class",
                                   "observed", "point", "mean", "median", "0.1", "0.25", "0.5", "0.75", "0.9"]
    assert len(frame) == 2 * 3 * 2 and frame["timestamp"].dtype.kind == "M"
    assert list(frame["step"].iloc[:6]) == [1, 1, 2, 2, 3, 3] and list(frame["column"].iloc[:2]) == ["c0", "c1"]
    assert (frame.loc[frame["model"] == "b", "origin"] == stamps[3]).all()
    assert (frame.groupby("model")["timestamp"].min() == frame.groupby("model")["origin"].first()).all()
    assert frame["observed"].tolist()[:6] == [0, 1, 2, 3, 4, 5] and frame["mean"].dtype == np.float32
    quantiles = frame[quantile_names(LEVELS)].to_numpy()
    assert (np.diff(quantiles, axis=1) >= 0).all()
    assert (frame["0.5"] == frame["median"]).all() and (frame["point"] != frame["median"]).any()


def test_numeric_time_is_float_and_no_window_gives_the_columns():
    table = ForecastTable(LEVELS)
    table.add(model="m", asset="s", window_class="fresh", forecast=Forecast(np.ones((2, 2))),
              observed=np.ones((2, 1)), timestamps=pd.Series([3, 4]))
    assert table.frame()["timestamp"].dtype == np.float64 and table.frame()["point"].tolist() == [1.0, 1.0]
    assert "0.9" in ForecastTable(LEVELS).frame().columns


def test_reliability_counts_observations_at_or_below_each_quantile():
    from chaosfm.evaluate import reliability

    table = pd.DataFrame({
        "model": ["m", "m", "m", "m", "n"],
        "window_class": ["fresh", "fresh", "fresh", "in_sample", "fresh"],
        "observed": [1.0, 2.0, 3.0, 100.0, 0.0],
        "0.1": [0.0, 2.0, 4.0, 0.0, 1.0],
        "0.9": [2.0, 3.0, 5.0, 0.0, 1.0],
    })
    out = reliability(table)
    assert list(out.index) == ["m", "n"]
    np.testing.assert_allclose(out.loc["m", [0.1, 0.9]].to_numpy(dtype=float), [2 / 3, 1.0])
    assert out.loc["m", "n"] == 3 and out.loc["n", 0.1] == 1.0
    assert reliability(table, "within_pretrain").empty
