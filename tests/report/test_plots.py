"""The report's figures, read from the matplotlib objects: fan charts and the score over time are
drawn against the data's time (dates, or numeric time labelled so), the score over time is a
ratio to the random walk, and its legend covers no class label."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.report._plots import fan_chart, fan_window, plt, scores_over_time

LEVELS = (0.1, 0.5, 0.9)


def _forecasts(stamps, models=("random_walk", "ar"), asset="AAA"):
    """A forecast table of one fresh window of three steps (``ForecastTable`` columns) per model."""
    rows = []
    for model in models:
        for step, stamp in enumerate(stamps, start=1):
            rows.append({"asset": asset, "origin": stamps[0], "step": step, "timestamp": stamp, "column": "close",
                         "model": model, "window_class": "fresh", "observed": 100.0 + step, "point": 100.0,
                         "mean": 100.0, "median": 100.0, "0.1": 98.0, "0.5": 100.0, "0.9": 102.0})
    return pd.DataFrame(rows)


def _tick_texts(axis):
    return [t.get_text() for t in axis.get_xticklabels() if t.get_text()]


def test_a_fan_chart_has_dates_on_its_x_axis_and_a_panel_per_model():
    stamps = pd.date_range("2021-03-01", periods=13, freq="D")
    history = pd.DataFrame({"timestamp": stamps[:10], "close": np.linspace(95, 100, 10)})
    window = fan_window(_forecasts(stamps[10:]), "AAA", "close")
    figure = fan_chart(window, history, "close", LEVELS)
    figure.canvas.draw()
    panels = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in panels] == ["random_walk", "ar"]
    for axis in panels:
        texts = _tick_texts(axis)
        assert len(texts) >= 2
        dates = pd.to_datetime(texts, format="%Y-%m-%d")  # raises unless every label is a date
        assert dates.min() >= stamps[0] - pd.Timedelta(days=1) and dates.max() <= stamps[-1] + pd.Timedelta(days=1)
        # The band spans the 0.1 and 0.9 quantiles over the window's own dates.
        (band,) = axis.collections
        vertices = band.get_paths()[0].vertices
        assert vertices[:, 1].min() == 98.0 and vertices[:, 1].max() == 102.0
    plt.close(figure)


def test_a_trajectory_fan_chart_labels_its_numeric_time():
    stamps = np.arange(13) * 0.02
    history = pd.DataFrame({"timestamp": stamps[:10], "close": np.sin(stamps[:10])})
    figure = fan_chart(fan_window(_forecasts(stamps[10:], models=("ar",)), "AAA", "close"), history, "close", LEVELS)
    figure.canvas.draw()
    (axis,) = [a for a in figure.axes if a.get_visible()]
    assert axis.get_xlabel() == "time (numeric timestamps of the data)"
    values = [float(t.replace("−", "-")) for t in _tick_texts(axis)]
    assert min(values) >= -0.05 and max(values) <= 0.3
    plt.close(figure)


def test_fan_window_is_the_latest_origin_the_most_models_scored():
    early = _forecasts(pd.date_range("2021-03-01", periods=3, freq="D"))
    late_one_model = _forecasts(pd.date_range("2021-04-01", periods=3, freq="D"), models=("ar",))
    window = fan_window(pd.concat([early, late_one_model]), "AAA", "close")
    assert window["origin"].unique().tolist() == [pd.Timestamp("2021-03-01")]
    with pytest.raises(ValueError, match="no fresh forecast of asset 'BBB'"):
        fan_window(early, "BBB", "close")


def _volatile_scores():
    """random_walk's CRPS swings by a factor of 50 (volatility); ar's is exactly twice it, window for
    window, over two assets; in_sample then fresh windows."""
    origins = pd.date_range("2021-01-01", periods=40, freq="D")
    scale = np.where(np.arange(40) % 10 < 5, 1.0, 50.0)
    rows = []
    for asset in ("AAA", "BBB"):
        for i, origin in enumerate(origins):
            window_class = "in_sample" if i < 25 else "fresh"
            rows.append(("random_walk", asset, origin, window_class, scale[i]))
            rows.append(("ar", asset, origin, window_class, 2.0 * scale[i]))
    return pd.DataFrame(rows, columns=["model", "asset", "origin", "window_class", "crps"])


def test_the_score_over_time_is_each_models_ratio_to_the_random_walk():
    figure = scores_over_time(_volatile_scores(), "crps", reference="random_walk")
    (axis,) = figure.axes
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert set(lines) == {"ar", "random_walk (= 1)"}
    np.testing.assert_allclose(lines["ar"].get_ydata(), 2.0)  # the volatility cancels
    np.testing.assert_array_equal(lines["random_walk (= 1)"].get_ydata(), [1.0, 1.0])
    assert axis.get_ylabel().startswith("crps / random_walk")
    plt.close(figure)
    raw = scores_over_time(_volatile_scores(), "crps")
    (axis,) = raw.axes
    ar = next(line for line in axis.get_lines() if line.get_label() == "ar")
    assert np.ptp(ar.get_ydata()) > 10  # the raw score moves with the volatility
    plt.close(raw)


def test_the_legend_covers_no_class_label_and_the_dates_are_dates():
    figure = scores_over_time(_volatile_scores(), "crps", reference="random_walk")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axis,) = figure.axes
    legend = axis.get_legend().get_window_extent(renderer)
    labels = [t for t in axis.texts if t.get_text() in ("in_sample", "within_pretrain", "fresh")]
    assert sorted(t.get_text() for t in labels) == ["fresh", "in_sample"]
    for label in labels:
        assert not legend.overlaps(label.get_window_extent(renderer)), label.get_text()
    assert legend.x0 >= axis.get_window_extent(renderer).x1  # beside the plot, over no line either
    pd.to_datetime(_tick_texts(axis), format="%Y-%m-%d")
    plt.close(figure)
