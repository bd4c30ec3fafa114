"""WTMM Hölder exponent: recovers H of exact fBm; the JAX CWT matches pywt.cwt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from chaosfm.predictor import HoelderConfig, hoelder_wtmm
from chaosfm.predictor._holder import cone_max, cwt_jax, cwt_pywavelets, scales

from ._fbm import davies_harte

CONFIG = HoelderConfig()


@pytest.mark.parametrize("length", [128, 512])
def test_jax_cwt_matches_pywavelets(length):
    rng = np.random.default_rng(0)
    signal = np.cumsum(rng.standard_normal(length)).astype(np.float32)
    grid = scales(CONFIG, length)
    # float64 reference: pywt in float32 is itself off by ~1e-3 of the peak (cancellation).
    reference, _ = pywt.cwt(signal.astype(np.float64), grid, "gaus1")
    ours = np.asarray(jax.jit(lambda x: cwt_jax(x, grid))(jnp.asarray(signal)))
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max())
    through_callback = np.asarray(jax.jit(lambda x: cwt_pywavelets(x, grid))(jnp.asarray(signal)))
    np.testing.assert_allclose(through_callback, reference, atol=1e-6 * np.abs(reference).max())


def test_backends_give_the_same_exponent():
    signal = jnp.asarray(davies_harte(256, 0.5, np.random.default_rng(1)), jnp.float32)
    a = hoelder_wtmm(signal, CONFIG, backend="jax")
    b = jax.jit(lambda x: hoelder_wtmm(x, CONFIG, backend="pywavelets"))(signal)
    np.testing.assert_allclose(float(a.hoelder), float(b.hoelder), atol=1e-3)
    np.testing.assert_allclose(np.asarray(a.tau), np.asarray(b.tau), atol=1e-3)


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_hoelder_of_fbm_within_a_tenth_on_average(hurst):
    estimate = jax.jit(jax.vmap(lambda x: hoelder_wtmm(x, CONFIG).hoelder))
    paths = np.stack([davies_harte(511, hurst, np.random.default_rng(s)) for s in range(16)])
    values = np.asarray(estimate(jnp.asarray(paths, jnp.float32)))
    assert np.all(np.isfinite(values))
    assert abs(values.mean() - hurst) < 0.1, values.mean()


def test_tau_is_linear_for_a_monofractal():
    # tau(q) = q (H + 1/2) - 1 for fBm under the 1/sqrt(a) normalisation: slope of tau in q.
    paths = np.stack([davies_harte(511, 0.5, np.random.default_rng(s)) for s in range(8)])
    tau = np.asarray(jax.jit(jax.vmap(lambda x: hoelder_wtmm(x, CONFIG).tau))(jnp.asarray(paths, jnp.float32)))
    slope = np.polyfit(np.asarray(CONFIG.moments), tau.mean(0), 1)[0]
    assert abs(slope - 1.0) < 0.15


def test_rougher_path_gives_lower_exponent():
    rng = np.random.default_rng(3)
    rough = jnp.asarray(davies_harte(255, 0.2, rng), jnp.float32)
    smooth = jnp.asarray(davies_harte(255, 0.8, rng), jnp.float32)
    assert hoelder_wtmm(rough, CONFIG).hoelder < hoelder_wtmm(smooth, CONFIG).hoelder


def test_exponent_carries_no_gradient():
    signal = jnp.asarray(davies_harte(127, 0.5, np.random.default_rng(4)), jnp.float32)
    grad = jax.jit(jax.grad(lambda x: hoelder_wtmm(x, CONFIG).hoelder))(signal)
    assert np.all(np.asarray(grad) == 0)


def test_too_short_buffer_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        hoelder_wtmm(jnp.zeros(4), CONFIG)


def test_cone_max_matches_a_plain_loop():
    rng = np.random.default_rng(5)
    values = rng.random((6, 40)).astype(np.float32) * (rng.random((6, 40)) < 0.3)
    half = np.array([1, 2, 3, 5, 8, 13])
    expected = np.stack([
        [values[j, max(0, b - half[j]) : b + half[j] + 1].max() for b in range(40)] for j in range(6)
    ])
    np.testing.assert_array_equal(np.asarray(cone_max(jnp.asarray(values), half)), expected)


def test_partly_filled_buffer_reads_only_its_data():
    # The newest 64 of 128 slots hold fBm; the empty slots hold garbage that must not matter.
    estimate = jax.jit(jax.vmap(lambda x, n: hoelder_wtmm(x, CONFIG, available=n).hoelder))
    paths = np.stack([davies_harte(127, 0.5, np.random.default_rng(s)) for s in range(32)])
    garbage = paths.copy()
    garbage[:, :64] = 1e4 * np.random.default_rng(0).standard_normal((32, 64))
    available = jnp.full((32,), 64)
    clean = np.asarray(estimate(jnp.asarray(paths, jnp.float32), available))
    dirty = np.asarray(estimate(jnp.asarray(garbage, jnp.float32), available))
    np.testing.assert_allclose(dirty, clean, atol=1e-4)
    assert abs(clean.mean() - 0.5) < 0.1, clean.mean()


def test_too_few_samples_give_nan_not_garbage():
    signal = jnp.asarray(davies_harte(127, 0.5, np.random.default_rng(6)), jnp.float32)
    estimate = jax.jit(lambda x, n: hoelder_wtmm(x, CONFIG, available=n))
    for available in (1, 2, 5, CONFIG.min_samples - 1):
        out = estimate(signal, available)
        assert np.isnan(float(out.hoelder)) and np.all(np.isnan(np.asarray(out.tau)))
    assert np.isfinite(float(estimate(signal, CONFIG.min_samples).hoelder))
