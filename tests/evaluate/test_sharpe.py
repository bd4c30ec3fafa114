"""Tests for chaosfm.evaluate._sharpe against hand-worked published formulas and simulation."""

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest

from chaosfm.evaluate import (
    BacktestOverfitting,
    deflated_sharpe_ratio,
    expected_maximum_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_confidence_interval,
    sharpe_ratio,
    sharpe_standard_error,
)
from chaosfm.evaluate._sharpe import _probabilistic_sharpe, _SampleMoments

RETURNS = [0.012, -0.020, 0.031, 0.015, -0.004, 0.022, 0.000, 0.010, -0.013, 0.027]
PHI = NormalDist().cdf
PHI_INV = NormalDist().inv_cdf
EULER_GAMMA = 0.5772156649015329


def hand_moments(returns):
    """Sharpe (ddof=1), population skewness and raw kurtosis with explicit sums."""
    t = len(returns)
    mean = sum(returns) / t
    deviations = [r - mean for r in returns]
    sample_variance = sum(d * d for d in deviations) / (t - 1)
    m2 = sum(d**2 for d in deviations) / t
    m3 = sum(d**3 for d in deviations) / t
    m4 = sum(d**4 for d in deviations) / t
    return mean / math.sqrt(sample_variance), m3 / m2**1.5, m4 / m2**2, t


def test_sharpe_ratio_and_annualisation():
    sr, _, _, _ = hand_moments(RETURNS)
    assert sharpe_ratio(RETURNS) == pytest.approx(sr, rel=1e-12)
    annual = sharpe_ratio(RETURNS, periods_per_year=252)
    assert annual == pytest.approx(sr * math.sqrt(252), rel=1e-12)


def test_standard_error_matches_mertens_by_hand():
    sr, skew, kurt, t = hand_moments(RETURNS)
    expected = math.sqrt((1 - skew * sr + (kurt - 1) / 4 * sr**2) / t)
    assert sharpe_standard_error(RETURNS) == pytest.approx(expected, rel=1e-12)
    # Mertens' excess-kurtosis form is the same number.
    mertens = math.sqrt((1 + sr**2 / 2 - skew * sr + (kurt - 3) / 4 * sr**2) / t)
    assert sharpe_standard_error(RETURNS) == pytest.approx(mertens, rel=1e-12)


def test_confidence_interval_by_hand():
    sr, skew, kurt, t = hand_moments(RETURNS)
    se = math.sqrt((1 - skew * sr + (kurt - 1) / 4 * sr**2) / t)
    z = PHI_INV(0.95)  # 90% two-sided
    low, high = sharpe_confidence_interval(RETURNS, level=0.90)
    assert low == pytest.approx(sr - z * se, rel=1e-10)
    assert high == pytest.approx(sr + z * se, rel=1e-10)


@pytest.mark.parametrize("benchmark_sr", [0.0, 0.1, -0.2])
def test_probabilistic_sharpe_ratio_by_hand(benchmark_sr):
    sr, skew, kurt, t = hand_moments(RETURNS)
    denominator = math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    expected = PHI((sr - benchmark_sr) * math.sqrt(t - 1) / denominator)
    assert probabilistic_sharpe_ratio(RETURNS, benchmark_sr) == pytest.approx(expected, rel=1e-10)


def test_psr_is_one_half_at_the_observed_sharpe():
    assert probabilistic_sharpe_ratio(RETURNS, sharpe_ratio(RETURNS)) == pytest.approx(0.5)


def test_deflated_sharpe_ratio_by_hand():
    sr, skew, kurt, t = hand_moments(RETURNS)
    trials = [0.05, 0.21, -0.10, 0.33, 0.12, 0.0, -0.04]
    n = len(trials)
    trial_mean = sum(trials) / n
    variance = sum((s - trial_mean) ** 2 for s in trials) / (n - 1)
    sr0 = math.sqrt(variance) * (
        (1 - EULER_GAMMA) * PHI_INV(1 - 1 / n) + EULER_GAMMA * PHI_INV(1 - 1 / (n * math.e))
    )
    denominator = math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    expected = PHI((sr - sr0) * math.sqrt(t - 1) / denominator)
    assert expected_maximum_sharpe_ratio(n, variance) == pytest.approx(sr0, rel=1e-10)
    from_ratios = deflated_sharpe_ratio(RETURNS, trial_sharpe_ratios=trials)
    from_variance = deflated_sharpe_ratio(RETURNS, n_trials=n, trial_sharpe_variance=variance)
    assert from_ratios == pytest.approx(expected, rel=1e-10)
    assert from_variance == pytest.approx(expected, rel=1e-10)
    # selecting among trials with positive SR spread can only lower the confidence.
    assert from_ratios < probabilistic_sharpe_ratio(RETURNS)


def test_deflated_sharpe_ratio_reproduces_the_paper_example():
    # Bailey & López de Prado (2014), sec. 4: annual SR 2.5 over 1250 days, skew -3, kurt 10,
    # N = 100 trials with annualised Sharpe variance 1/2 -> SR0 = 0.1132 per day, DSR = 0.9004.
    sr0 = expected_maximum_sharpe_ratio(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    moments = _SampleMoments(np.array(2.5 / math.sqrt(250)), np.array(-3.0), np.array(10.0), 1250)
    assert float(_probabilistic_sharpe(moments, sr0)) == pytest.approx(0.9004, abs=1e-4)


def test_standard_error_matches_monte_carlo():
    rng = np.random.default_rng(0)
    periods, replicates = 300, 2500
    gaussian = rng.normal(0.1, 1.0, size=(periods, replicates))
    # skewed iid returns: Exp(1) - 0.8 has mean 0.2, sd 1, skewness 2, raw kurtosis 9.
    skewed = rng.exponential(1.0, size=(periods, replicates)) - 0.8
    for returns in (gaussian, skewed):
        sharpe = sharpe_ratio(returns)  # (replicates,)
        assert np.mean(sharpe_standard_error(returns)) == pytest.approx(np.std(sharpe), rel=0.07)
    # the skew term matters: the Gaussian formula (Lo 2002) would overstate the skewed SE by ~22%.
    lo_se = math.sqrt((1 + 0.2**2 / 2) / periods)
    assert np.std(sharpe_ratio(skewed)) < 0.9 * lo_se


def test_confidence_interval_coverage_monte_carlo():
    rng = np.random.default_rng(1)
    true_sr = 0.1
    returns = rng.normal(true_sr, 1.0, size=(300, 3000))
    low, high = sharpe_confidence_interval(returns, level=0.9)
    assert np.mean((low <= true_sr) & (true_sr <= high)) == pytest.approx(0.9, abs=0.025)


def test_sharpe_validation():
    with pytest.raises(ValueError, match="constant"):
        sharpe_ratio([0.01, 0.01, 0.01])
    with pytest.raises(ValueError, match="at least 2 periods"):
        sharpe_standard_error([0.01])
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(RETURNS, n_trials=1, trial_sharpe_variance=0.1)
    with pytest.raises(ValueError, match="not both"):
        deflated_sharpe_ratio(RETURNS, trial_sharpe_ratios=[0.1, 0.2], trial_sharpe_variance=0.1)
    with pytest.raises(ValueError, match="both n_trials"):
        deflated_sharpe_ratio(RETURNS, n_trials=10)


# --------------------------------------------------------------------------------------------------
# Probability of backtest overfitting


def test_pbo_hand_worked_two_blocks():
    # Strategy 0 wins the first half and loses the second; strategy 1 the opposite. With two blocks
    # each in-sample winner is the out-of-sample loser: rank 1 of 2, w = 1/3, logit ln(1/2).
    performance = np.array([[2.0, -1.0], [1.0, -2.0], [-2.0, 1.0], [-1.0, 2.0]])
    result = probability_of_backtest_overfitting(
        performance, n_blocks=2, metric=lambda r: r.mean(axis=0)
    )
    assert isinstance(result, BacktestOverfitting)
    assert result.n_combinations == 2
    np.testing.assert_allclose(result.logits, [math.log(0.5)] * 2)
    assert result.pbo == 1.0


def test_pbo_is_high_for_pure_noise():
    pbos = []
    for seed in range(12):
        noise = np.random.default_rng(seed).normal(0.0, 0.01, size=(400, 20))
        result = probability_of_backtest_overfitting(noise, n_blocks=10)
        assert result.n_combinations == math.comb(10, 5) == result.logits.shape[0]
        pbos.append(result.pbo)
    # for skill-free strategies the in-sample winner's out-of-sample rank is uniform: PBO ~ 1/2.
    assert 0.3 < np.mean(pbos) < 0.7


def test_pbo_is_zero_when_one_strategy_has_a_real_edge():
    rng = np.random.default_rng(5)
    performance = rng.normal(0.0, 0.01, size=(640, 15))
    performance[:, 3] += 0.05  # wins every block by a wide margin
    result = probability_of_backtest_overfitting(performance, n_blocks=16)
    assert result.n_combinations == math.comb(16, 8)
    assert result.pbo == 0.0
    np.testing.assert_allclose(result.logits, math.log(15 / 16 / (1 / 16)))


def test_pbo_block_sum_sharpe_matches_direct_computation():
    rng = np.random.default_rng(6)
    performance = rng.normal(0.001, 0.01, size=(203, 7)) + 5.0  # uneven blocks, large offset

    def direct_sharpe(returns):
        return returns.mean(axis=0) / returns.std(axis=0, ddof=1)

    fast = probability_of_backtest_overfitting(performance, n_blocks=8)
    slow = probability_of_backtest_overfitting(performance, n_blocks=8, metric=direct_sharpe)
    np.testing.assert_allclose(fast.logits, slow.logits)
    assert fast.pbo == slow.pbo


def test_pbo_logit_from_explicit_cscv_loop():
    # Independent re-implementation of CSCV with equal blocks, for one small matrix.
    rng = np.random.default_rng(7)
    performance = rng.normal(0.0, 1.0, size=(48, 5))
    blocks = np.split(np.arange(48), 6)
    expected = []
    for chosen in itertools.combinations(range(6), 3):
        in_rows = np.concatenate([blocks[b] for b in chosen])
        out_rows = np.concatenate([blocks[b] for b in range(6) if b not in chosen])
        in_score = performance[in_rows].mean(0) / performance[in_rows].std(0, ddof=1)
        out_score = performance[out_rows].mean(0) / performance[out_rows].std(0, ddof=1)
        best = int(np.argmax(in_score))
        rank = 1 + int(np.sum(out_score < out_score[best]))
        expected.append(math.log(rank / (5 + 1 - rank)))
    result = probability_of_backtest_overfitting(performance, n_blocks=6)
    np.testing.assert_allclose(result.logits, expected)
    assert result.pbo == pytest.approx(np.mean(np.array(expected) <= 0))


def test_pbo_validation():
    with pytest.raises(ValueError, match="n_blocks must be an even"):
        probability_of_backtest_overfitting(np.zeros((20, 3)), n_blocks=5)
    with pytest.raises(ValueError, match="N >= 2"):
        probability_of_backtest_overfitting(np.zeros((20, 1)))
    with pytest.raises(ValueError, match="n_blocks must be <= T"):
        probability_of_backtest_overfitting(np.ones((10, 3)), n_blocks=12)
    with pytest.raises(ValueError, match="metric must return shape"):
        probability_of_backtest_overfitting(np.ones((10, 3)), n_blocks=2, metric=lambda r: r.mean())
