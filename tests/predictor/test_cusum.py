"""CUSUM: bounded detection delay on a 2-sigma shift, no alarm on stationary noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.predictor import CusumConfig, init_cusum, run_cusum, update_cusum

CONFIG = CusumConfig()


def _first_alarm(alarms: np.ndarray, start: int) -> int | None:
    hits = np.flatnonzero(alarms[start:])
    return None if hits.size == 0 else int(hits[0])


@pytest.mark.parametrize("scale", [1.0, 250.0])
def test_detects_two_sigma_mean_shift_within_bounded_delay(scale):
    change, delays = 400, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        errors = rng.standard_normal(600)
        errors[change:] += 2.0
        out = run_cusum(jnp.asarray(errors * scale, jnp.float32), CONFIG)
        alarms = np.asarray(out.alarm)
        assert not alarms[:change].any(), f"seed {seed}: false alarm before the change"
        delay = _first_alarm(alarms, change)
        assert delay is not None, f"seed {seed}: shift never detected"
        delays.append(delay)
    # Measured with the defaults: median 6.5, max 20 steps over these seeds.
    assert max(delays) <= 30, delays
    assert np.median(delays) <= 10, delays


@pytest.mark.parametrize("noise", ["gaussian", "student_t3", "student_t4", "laplace"])
def test_false_alarm_rate_on_stationary_noise(noise):
    # Tested false-alarm rate: at most 1e-4 per step, i.e. <= 5 alarms in 10 x 5,000 steps
    # (measured with the defaults: 0 or 1 alarm for each noise).
    run = jax.jit(lambda e: run_cusum(e, CONFIG).alarm)
    total = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        if noise == "gaussian":
            errors = rng.standard_normal(5000)
        elif noise.startswith("student_t"):
            errors = rng.standard_t(int(noise[-1]), 5000)
        else:
            errors = rng.laplace(size=5000)
        total += int(np.asarray(run(jnp.asarray(errors, jnp.float32))).sum())
    assert total <= 5


def test_heavy_tails_raise_the_threshold():
    rng = np.random.default_rng(0)
    gaussian = run_cusum(jnp.asarray(rng.standard_normal(500), jnp.float32), CONFIG)
    heavy = run_cusum(jnp.asarray(rng.standard_t(3, 500), jnp.float32), CONFIG)
    ratio = np.asarray(heavy.threshold / heavy.sigma)[-200:].mean()
    base = np.asarray(gaussian.threshold / gaussian.sigma)[-200:].mean()
    assert ratio > base * 1.2
    # Gaussian noise is clamped at kappa >= 3, so the bar is h * sigma at least.
    assert np.all(np.asarray(gaussian.threshold / gaussian.sigma) >= CONFIG.threshold_scale - 1e-4)


def test_warmup_uses_gaussian_kurtosis_and_never_alarms():
    errors = jnp.full((CONFIG.warmup - 1,), 1000.0, jnp.float32)
    out = run_cusum(errors, CONFIG)
    assert not np.asarray(out.alarm).any()
    assert np.allclose(np.asarray(out.kurtosis), 3.0)


def test_statistic_resets_on_alarm():
    rng = np.random.default_rng(3)
    errors = rng.standard_normal(300)
    errors[100:] += 4.0
    out = run_cusum(jnp.asarray(errors, jnp.float32), CONFIG)
    alarms = np.flatnonzero(np.asarray(out.alarm))
    assert alarms.size >= 1
    first = alarms[0]
    # The step after an alarm starts again from zero: one increment, below the threshold.
    assert out.statistic[first + 1] < out.statistic[first]


def test_update_jits_and_matches_scan():
    rng = np.random.default_rng(5)
    errors = jnp.asarray(rng.standard_normal(50), jnp.float32)
    step = jax.jit(lambda s, e: update_cusum(s, e, CONFIG))
    state = init_cusum(CONFIG)
    stats = []
    for e in errors:
        out, state = step(state, e)
        stats.append(float(out.statistic))
    np.testing.assert_allclose(stats, np.asarray(run_cusum(errors, CONFIG).statistic), rtol=1e-6)
