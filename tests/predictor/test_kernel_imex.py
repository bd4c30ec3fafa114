"""Kernel C: the Anderson fixed point solves the implicit system; moments match the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.predictor import IMEXConfig
from chaosfm.predictor._kernel_imex import (
    MEAN_REVERSION,
    JumpDiffusionParams,
    anderson,
    apply_bands,
    fit_jump_diffusion,
    generator_bands,
    imex_density,
    jump_convolution,
    jump_spectrum,
    predict_imex,
)

CONFIG = IMEXConfig()


def _params(mean=0.3, sigma=1.0, rate=0.0, jump_mean=0.0, jump_std=1.0):
    return JumpDiffusionParams(*(jnp.asarray(v, jnp.float32) for v in (mean, sigma, rate, jump_mean, jump_std)))


def test_anderson_solves_the_implicit_system():
    # From a cold start (the right-hand side); in the kernel each solve starts from the previous
    # substep's density and needs fewer iterations (see the next test).
    iterations = 16
    params = _params()
    grid = jnp.linspace(-8.0, 8.0, CONFIG.grid_size)
    bands = generator_bands(grid, params)
    dt = 1.0 / CONFIG.substeps
    dense = np.diag(np.asarray(bands[1])) + np.diag(np.asarray(bands[0])[1:], -1) + np.diag(np.asarray(bands[2])[:-1], 1)
    rhs = np.exp(-0.5 * np.asarray(grid) ** 2)
    exact = np.linalg.solve(np.eye(CONFIG.grid_size) - dt * dense, rhs)
    diagonal = 1.0 - dt * bands[1]
    jacobi = lambda q: (jnp.asarray(rhs, jnp.float32) + dt * (apply_bands(bands, q) - bands[1] * q)) / diagonal
    solved, residual = jax.jit(lambda x: anderson(
        jacobi, x, memory=CONFIG.anderson_memory, iterations=iterations,
    ))(jnp.asarray(rhs, jnp.float32))
    np.testing.assert_allclose(np.asarray(solved), exact, atol=1e-3 * np.abs(exact).max())
    plain = jnp.asarray(rhs, jnp.float32)
    for _ in range(iterations):
        plain = jacobi(plain)
    # Acceleration earns its keep: plain Jacobi is further off after as many iterations.
    assert np.abs(np.asarray(plain) - exact).max() > np.abs(np.asarray(solved) - exact).max()


def _direct_imex(params, config):
    """The same IMEX Euler steps with the implicit system solved densely (the reference)."""
    size = config.grid_size
    grid = np.linspace(-config.grid_width, config.grid_width, size)
    dx = grid[1] - grid[0]
    bands = [np.asarray(b, np.float64) for b in generator_bands(jnp.asarray(grid, jnp.float32), params)]
    dense = np.diag(bands[1]) + np.diag(bands[0][1:], -1) + np.diag(bands[2][:-1], 1)
    dt = 1.0 / config.substeps
    offsets = (np.arange(2 * size - 1) - (size - 1)) * dx
    kernel = np.exp(-0.5 * ((offsets - float(params.jump_mean)) / float(params.jump_std)) ** 2)
    kernel /= kernel.sum()
    p = np.exp(-0.5 * (grid / (2 * dx)) ** 2)
    p /= p.sum()
    for _ in range(config.substeps):
        jumped = np.convolve(p, kernel)[size - 1 : 2 * size - 1]
        p = np.linalg.solve(np.eye(size) - dt * dense, p + dt * float(params.jump_rate) * (jumped - p))
        p = np.maximum(p, 0.0)
        p /= p.sum()
    return p / dx


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_default_iterations_match_the_direct_solve(rate):
    params = _params(mean=-0.2, sigma=1.1, rate=rate, jump_mean=1.5, jump_std=2.0)
    out = jax.jit(lambda p: imex_density(p, CONFIG))(params)
    reference = _direct_imex(params, CONFIG)
    np.testing.assert_allclose(np.asarray(out.density), reference, atol=2e-3 * reference.max())


def test_fft_jump_convolution_matches_numpy():
    grid = jnp.linspace(-8.0, 8.0, 64)
    params = _params(jump_mean=1.0, jump_std=0.7)
    p = np.random.default_rng(0).random(64).astype(np.float32)
    ours = np.asarray(jump_convolution(jnp.asarray(p), jump_spectrum(grid, params)))
    dx = float(grid[1] - grid[0])
    offsets = (np.arange(127) - 63) * dx
    kernel = np.exp(-0.5 * ((offsets - 1.0) / 0.7) ** 2)
    np.testing.assert_allclose(ours, np.convolve(p, kernel / kernel.sum())[63:127], atol=1e-5)


def test_generator_conserves_mass():
    bands = generator_bands(jnp.linspace(-8.0, 8.0, 64), _params(rate=0.2, jump_mean=1.0))
    p = jax.random.uniform(jax.random.key(0), (64,))
    assert abs(float(jnp.sum(apply_bands(bands, p)))) < 1e-3 * float(jnp.sum(p))


def test_diffusion_moments_match_ornstein_uhlenbeck():
    out = jax.jit(lambda p: imex_density(p, IMEXConfig(substeps=8)))(_params())
    assert abs(float(jnp.sum(out.density) * (out.grid[1] - out.grid[0])) - 1.0) < 1e-4
    assert np.all(np.asarray(out.density) >= 0)
    kappa = MEAN_REVERSION
    mean = 0.3 * (1 - np.exp(-kappa))
    std = np.sqrt((1 - np.exp(-2 * kappa)) / (2 * kappa))
    # Implicit Euler with 8 substeps lags the exact OU flow; moments within ~15%.
    assert abs(float(out.prediction) - mean) < 0.05
    assert abs(float(out.std) - std) / std < 0.2


def test_jumps_widen_the_density_without_moving_its_mean():
    calm = jax.jit(lambda p: imex_density(p, CONFIG))(_params(mean=0.0, rate=0.0))
    jumpy = jax.jit(lambda p: imex_density(p, CONFIG))(_params(mean=0.0, rate=0.3, jump_mean=2.0, jump_std=0.5))
    assert float(jumpy.std) > 1.2 * float(calm.std)
    # The compensator cancels the jumps' mean drift (up to discretisation).
    assert abs(float(jumpy.prediction)) < 0.15


def test_fit_separates_jumps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500) * 0.8 + 0.1
    x[::50] = 6.0
    params = fit_jump_diffusion(jnp.asarray(x, jnp.float32), jnp.ones(500), CONFIG)
    assert abs(float(params.jump_rate) - 0.02) < 0.005
    assert abs(float(params.sigma) - 0.8) < 0.1
    out = predict_imex(jnp.asarray(x, jnp.float32), jnp.ones(500), CONFIG)
    assert np.isfinite(float(out.prediction))


@pytest.mark.parametrize(
    "fitted, variance",
    [
        ((0.1, 1.0, 0.0, 0.0, 1.0), 1.0),
        ((0.0, 0.7, 0.0, 0.0, 1.0), 0.49),
        # Jumps N(4, 1) at rate 0.03 on top: their variance lambda (mu^2 + s^2) adds ~0.5.
        ((0.0, 0.8, 0.03, 4.0, 1.0), 0.64 + 0.03 * 17.0),
    ],
)
def test_one_step_density_has_the_fitted_spread(fitted, variance):
    # The fitted mean and sigma describe one step's increment; the density the kernel samples
    # from must have them, whatever the mean reversion inside the step. Straight from the fit
    # (kappa = 5) it had a standard deviation of 0.32 sigma.
    from chaosfm.predictor._kernel_imex import sde_parameters

    params = _params(*fitted)
    out = jax.jit(lambda p: imex_density(sde_parameters(p, CONFIG), CONFIG))(params)
    assert abs(float(out.std) / np.sqrt(variance) - 1.0) < 0.06, float(out.std)
    assert abs(float(out.prediction) - fitted[0]) < 0.02
