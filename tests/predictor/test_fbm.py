"""The fBm generator the Hölder tests rely on: its increments have the fGn covariance."""

import numpy as np
import pytest

from ._fbm import davies_harte, fgn_autocovariance


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_davies_harte_increments_have_fgn_covariance(hurst):
    rng = np.random.default_rng(0)
    paths = np.stack([davies_harte(256, hurst, rng) for _ in range(400)])
    increments = np.diff(paths, axis=1)
    for lag in (0, 1, 2, 5):
        empirical = np.mean(increments[:, : 256 - lag] * increments[:, lag:])
        assert abs(empirical - fgn_autocovariance(hurst, np.array([lag]))[0]) < 0.03


def test_variance_scales_as_t_to_the_2h():
    rng = np.random.default_rng(1)
    hurst = 0.7
    paths = np.stack([davies_harte(512, hurst, rng) for _ in range(400)])
    ratio = paths[:, 512].var() / paths[:, 64].var()
    assert abs(np.log(ratio) / np.log(8) - 2 * hurst) < 0.1
