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


# ---- windowed transform for long buffers --------------------------------------------------------
from chaosfm.predictor._holder import hoelder_wtmm_windowed, window_margin  # noqa: E402

WINDOW = 512


@pytest.mark.parametrize("length", [4096, 16384])
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_windowed_exponent_equals_the_direct_one_and_recovers_h(length, hurst):
    # Both fit in memory at these lengths, so the windowed estimate is held to the direct one
    # (1e-4: float rounding of the per-window FFTs) and both to the true H (0.1, as at N = 512).
    direct = jax.jit(jax.vmap(lambda x: hoelder_wtmm(x, CONFIG)))
    windowed = jax.jit(jax.vmap(lambda x: hoelder_wtmm(x, CONFIG, window=WINDOW)))
    paths = jnp.asarray(
        np.stack([davies_harte(length - 1, hurst, np.random.default_rng(s)) for s in range(2)]), jnp.float32
    )
    a, b = direct(paths), windowed(paths)
    np.testing.assert_allclose(np.asarray(b.hoelder), np.asarray(a.hoelder), atol=1e-4)
    np.testing.assert_allclose(np.asarray(b.tau), np.asarray(a.tau), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(b.num_maxima), np.asarray(a.num_maxima))
    assert abs(float(np.mean(b.hoelder)) - hurst) < 0.1, np.asarray(b.hoelder)


def test_windowed_partly_filled_buffer_matches_direct():
    signal = np.asarray(davies_harte(4095, 0.5, np.random.default_rng(7)), np.float32)
    signal[:1500] = 1e4  # garbage in the empty slots
    direct = jax.jit(lambda x, n: hoelder_wtmm(x, CONFIG, available=n).hoelder)
    windowed = jax.jit(lambda x, n: hoelder_wtmm(x, CONFIG, available=n, window=WINDOW, overlap=200).hoelder)
    for available in (2596, 700):
        a, b = float(direct(signal, available)), float(windowed(signal, available))
        assert np.isfinite(a)
        np.testing.assert_allclose(b, a, atol=1e-4)


def _largest_array(closed_jaxpr) -> int:
    """Elements of the largest array of two or more axes (input, constant or intermediate, inside
    loops too): the transform's arrays. The buffer itself and its centred copy are ``(N,)``."""
    largest = 0

    def count(shape) -> None:
        nonlocal largest
        if len(shape) >= 2:
            largest = max(largest, int(np.prod(shape)))

    def visit(jaxpr):
        for var in [*jaxpr.invars, *jaxpr.constvars]:
            count(var.aval.shape)
        for equation in jaxpr.eqns:
            for var in equation.outvars:
                count(getattr(var.aval, "shape", ()))
            for param in equation.params.values():
                for inner in param if isinstance(param, (tuple, list)) else (param,):
                    if hasattr(inner, "jaxpr") and hasattr(inner, "consts"):  # a closed jaxpr
                        visit(inner.jaxpr)
                        for const in inner.consts:
                            count(np.shape(const))
                    elif hasattr(inner, "eqns"):  # an open jaxpr
                        visit(inner)

    visit(closed_jaxpr.jaxpr)
    for const in closed_jaxpr.consts:
        count(np.shape(const))
    return largest


def test_windowed_peak_array_is_bounded_by_the_window_not_the_buffer():
    sizes = {}
    for length in (4096, 16384, 65536):
        signal = jax.ShapeDtypeStruct((length,), jnp.float32)
        windowed = _largest_array(jax.make_jaxpr(lambda x: hoelder_wtmm(x, CONFIG, window=WINDOW))(signal))
        direct = _largest_array(jax.make_jaxpr(lambda x: hoelder_wtmm(x, CONFIG))(signal))
        sizes[length] = (windowed, direct)
    scale_count = len(scales(CONFIG, 4096))
    bound = len(CONFIG.moments) * scale_count * 2 * WINDOW  # (Q, S, W), or (S, FFT size <= 2 W)
    assert all(windowed <= bound for windowed, _ in sizes.values()), sizes
    assert sizes[4096][0] == sizes[65536][0]  # independent of the buffer
    assert all(direct >= len(CONFIG.moments) * scale_count * length for length, (_, direct) in sizes.items())


def test_windowed_bad_window_names_the_bound():
    margin = window_margin(CONFIG, 4096)
    signal = jnp.zeros(4096)
    with pytest.raises(ValueError, match="overlap"):
        hoelder_wtmm_windowed(signal, CONFIG, window=WINDOW, overlap=2 * margin - 1)
    with pytest.raises(ValueError, match="window"):
        hoelder_wtmm_windowed(signal, CONFIG, window=2 * margin, overlap=2 * margin)
