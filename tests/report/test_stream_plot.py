"""The stream's telemetry figure: dates on the x axis (numeric time or rows only when the stream
has no dates), and each prediction's 10-90% interval drawn at the time it predicts."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.report import stream_telemetry, stream_times
from chaosfm.report._plots import plt

KERNELS = ("stable", "dgm")


def _rows(stamps):
    """Telemetry and prediction rows as ``chaosfm stream`` makes them (only the keys the plot reads)."""
    telemetry, predictions = [], []
    for i, stamp in enumerate(stamps):
        observed = 100.0 + i
        telemetry.append({"step": i + 1, "row": i + 1, "timestamp": stamp, "observed": observed, "hoelder": 0.5,
                          "cusum_statistic": 0.1 * i, "cusum_threshold": 5.0, "regime_change": i == 3,
                          "weight_stable": 0.25, "weight_dgm": 0.75})
        predictions.append({"row": i + 1, "line": None, "timestamp": stamp, "observed": observed,
                            "previous": observed - 1, "prediction_next": observed + 1.0,
                            "0.1": observed - 2.0 * i, "0.9": observed + 3.0 * i, "warm": True})
    return telemetry, predictions


def test_the_telemetry_plot_has_dates_and_the_interval_at_the_time_it_predicts():
    stamps = [str(s) for s in pd.bdate_range("2022-01-03", periods=30)]  # as the stream writes them
    telemetry, predictions = _rows(stamps)
    figure = stream_telemetry(telemetry, predictions)
    figure.canvas.draw()
    top, bottom = figure.axes[0], figure.axes[-1]
    texts = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert len(texts) >= 2
    pd.to_datetime(texts, format="%Y-%m-%d")  # raises unless every tick is a date
    assert bottom.get_xlabel() == "date"
    (band,) = [c for c in top.collections if "interval" in c.get_label()]
    assert band.get_label() == "10-90% interval (made a step before)"
    # Row i predicts row i + 1: the band over row 1..29's times spans row 0..28's 0.1 and 0.9.
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == min(p["0.1"] for p in predictions[:-1])
    assert vertices[:, 1].max() == max(p["0.9"] for p in predictions[:-1])
    line = next(x for x in top.get_lines() if x.get_label() == "prediction (made a step before)")
    first = pd.Timestamp(line.get_xdata()[0])
    assert first == pd.Timestamp(stamps[1]) and line.get_ydata()[0] == predictions[0]["prediction_next"]
    plt.close(figure)


def test_numeric_time_and_no_time_are_labelled_as_what_they_are():
    x, kind = stream_times(_rows([f"{0.02 * i:.2f}" for i in range(10)])[0])
    assert kind == "numeric" and x[3] == pytest.approx(0.06)
    x, kind = stream_times(_rows(["2022-01-03", "2022-01-04T10:00"])[0])
    assert kind == "date" and x[1] == np.datetime64("2022-01-04T10:00")
    telemetry, predictions = _rows([""] * 10)  # a feed without timestamps
    assert stream_times(telemetry)[1] == "row"
    figure = stream_telemetry(telemetry, predictions)
    assert figure.axes[-1].get_xlabel() == "row of the input (the stream has no timestamps)"
    plt.close(figure)
    with pytest.raises(ValueError, match="no telemetry row"):
        stream_telemetry([], [])
