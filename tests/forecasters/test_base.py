"""Forecast: shapes, quantiles, point forecasts and the long frame."""

import numpy as np
import pytest

from chaosfm.forecasters import Forecast


def test_shapes_quantiles_and_frame():
    samples = np.arange(24, dtype=float).reshape(4, 3, 2)
    forecast = Forecast(samples, ["a", "b"], asset="x", timestamps=[1, 2, 3])
    assert forecast.quantile(0.5).shape == (3, 2) and forecast.quantile([0.1, 0.9]).shape == (2, 3, 2)
    np.testing.assert_allclose(forecast.mean(), samples.mean(axis=0))
    np.testing.assert_allclose(forecast.point_forecast(), np.median(samples, axis=0))
    frame = forecast.to_frame([0.5])
    assert len(frame) == 6 and list(frame.columns) == ["asset", "step", "timestamp", "column", "mean", "q0.5"]
    assert frame.loc[(frame.step == 2) & (frame.column == "b"), "mean"].item() == samples[:, 1, 1].mean()


def test_univariate_input_and_own_point():
    forecast = Forecast(np.ones((5, 4)), point=np.full(4, 2.0))
    assert forecast.samples.shape == (5, 4, 1) and forecast.columns == ["x0"]
    np.testing.assert_allclose(forecast.point_forecast(), 2.0)


@pytest.mark.parametrize("bad", [np.ones(3), np.ones((0, 3)), np.ones((2, 3, 4, 5))])
def test_bad_shapes(bad):
    with pytest.raises(ValueError, match="shape"):
        Forecast(bad)
