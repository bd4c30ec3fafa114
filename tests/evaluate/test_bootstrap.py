"""bootstrap_interval against a slow, obviously correct percentile bootstrap written here."""

import numpy as np
import pytest

from chaosfm.evaluate import bootstrap_interval, mean_difference, no_interval

N_RESAMPLES = 20_000


def reference_interval(samples, statistic, n_resamples, confidence, seed=12345):
    """Percentile bootstrap, one resample at a time: each sample redrawn with replacement on its
    own, the statistic of every redraw, the (1 - c)/2 and (1 + c)/2 quantiles of those."""
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        redrawn = [s[rng.integers(0, len(s), len(s))] for s in samples]
        draws[b] = statistic(*redrawn)
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return low, high, draws.std()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return {
        "one": rng.exponential(2.0, 150),  # skewed: a percentile interval is not symmetric
        "a": rng.normal(1.0, 1.0, 120),
        "b": rng.normal(0.4, 2.0, 90),
    }


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_mean_of_one_sample_matches_the_reference(data, confidence):
    x = data["one"]
    out = bootstrap_interval((x,), n_resamples=N_RESAMPLES, confidence=confidence, seed=3)
    assert out["value"] == float(np.mean(x))
    low, high, spread = reference_interval([x], np.mean, N_RESAMPLES, confidence)
    # Two Monte-Carlo estimates of the same quantiles: a few percent of the bootstrap spread apart.
    assert out["ci_low"] == pytest.approx(low, abs=0.1 * spread)
    assert out["ci_high"] == pytest.approx(high, abs=0.1 * spread)
    assert out["ci_low"] < out["value"] < out["ci_high"]
    # Skew of the exponential shows in the interval: longer to the right of the mean.
    assert out["ci_high"] - out["value"] > out["value"] - out["ci_low"]


def test_difference_of_means_of_two_independent_samples(data):
    a, b = data["a"], data["b"]
    out = bootstrap_interval((a, b), mean_difference, n_resamples=N_RESAMPLES, confidence=0.95, seed=4)
    assert out["value"] == float(np.mean(a) - np.mean(b))
    low, high, spread = reference_interval([a, b], lambda u, v: u.mean() - v.mean(), N_RESAMPLES, 0.95)
    assert out["ci_low"] == pytest.approx(low, abs=0.1 * spread)
    assert out["ci_high"] == pytest.approx(high, abs=0.1 * spread)
    # Independent resampling: the spread is that of two independent means, not of paired ones.
    expected = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert spread == pytest.approx(expected, rel=0.05)
    assert (high - low) == pytest.approx(2 * 1.96 * expected, rel=0.08)


def test_a_statistic_that_is_not_vectorised(data):
    # As the probes use it: resample indices, compute any statistic of what they pick.
    y = data["a"]
    index = np.arange(y.size)

    def median_of(i):
        return float(np.median(y[i]))

    out = bootstrap_interval((index,), median_of, n_resamples=4000, confidence=0.9, seed=5, vectorized=False)
    assert out["value"] == float(np.median(y))
    low, high, spread = reference_interval([index], median_of, 4000, 0.9)
    assert out["ci_low"] == pytest.approx(low, abs=0.25 * spread)
    assert out["ci_high"] == pytest.approx(high, abs=0.25 * spread)


def test_undefined_resamples_are_left_out_when_the_value_is_defined():
    # Three values: a ninth of the redraws pick one value thrice and have no spread (NaN).
    y = np.array([1.0, 2.0, 4.0])

    def spread(i):
        values = y[i]
        return float(values.std()) if np.ptp(values) > 0 else float("nan")

    out = bootstrap_interval((np.arange(3),), spread, n_resamples=2000, seed=6, vectorized=False)
    assert out["value"] == float(y.std())
    rng = np.random.default_rng(0)
    draws = np.array([spread(rng.integers(0, 3, 3)) for _ in range(2000)])
    low, high = np.nanquantile(draws, [0.025, 0.975])
    assert np.isfinite([out["ci_low"], out["ci_high"]]).all()
    assert out["ci_low"] == pytest.approx(low, abs=0.2) and out["ci_high"] == pytest.approx(high, abs=0.2)
    # An undefined value stays undefined: no interval is made up around NaN.
    nan = bootstrap_interval((np.array([1.0, np.nan, 3.0]),), n_resamples=200)
    assert np.isnan([nan["value"], nan["ci_low"], nan["ci_high"]]).all()


def test_min_size_gives_nulls():
    empty = {"value": None, "ci_low": None, "ci_high": None}
    assert no_interval() == empty
    assert bootstrap_interval((np.array([1.0]),)) == empty  # default min_size 2
    assert bootstrap_interval((np.arange(5.0), np.array([1.0])), mean_difference) == empty
    assert bootstrap_interval((np.arange(5.0), np.arange(3.0)), mean_difference, min_size=4) == empty
    out = bootstrap_interval((np.arange(5.0), np.arange(4.0)), mean_difference, min_size=4, n_resamples=200)
    assert out["value"] == pytest.approx(0.5) and None not in out.values()


def test_same_seed_same_interval(data):
    x = data["one"]
    first = bootstrap_interval((x,), n_resamples=500, seed=[1, 2])
    assert bootstrap_interval((x,), n_resamples=500, seed=[1, 2]) == first
    assert bootstrap_interval((x,), n_resamples=500, seed=[1, 3]) != first
    assert bootstrap_interval((x,), n_resamples=500, seed=[1, 3])["value"] == first["value"]
    narrower = bootstrap_interval((x,), n_resamples=500, seed=[1, 2], confidence=0.5)
    assert first["ci_low"] < narrower["ci_low"] < narrower["ci_high"] < first["ci_high"]
