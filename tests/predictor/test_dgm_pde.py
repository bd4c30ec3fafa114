"""Kernel B's DGM network on heat-equation terminal problems with closed-form solutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.predictor import DGMConfig, solve_terminal_pde
from chaosfm.predictor._kernel_dgm import TRAIN_COMPILER_OPTIONS, DGMProblem, init_dgm, train, value

HORIZON, DOMAIN, SIGMA = 1.0, 3.0, 1.0


def grid_error(params, exact):
    t, x = np.meshgrid(np.linspace(0, HORIZON, 21), np.linspace(-DOMAIN, DOMAIN, 61))
    t, x = jnp.asarray(t.ravel(), jnp.float32), jnp.asarray(x.ravel(), jnp.float32)
    fitted = jax.vmap(value, in_axes=(None, 0, 0))(params, t, x)
    return np.abs(np.asarray(fitted) - np.asarray(exact(t, x)))


def test_heat_equation_with_sine_terminal_is_solved_within_0_02():
    # u_t + sigma^2/2 u_xx = 0, u(T, x) = sin x  =>  u(t, x) = exp(-sigma^2 (T - t) / 2) sin x.
    exact = lambda t, x: jnp.exp(-0.5 * SIGMA**2 * (HORIZON - t)) * jnp.sin(x)  # noqa: E731
    config = DGMConfig(horizon=HORIZON, domain=DOMAIN, collocation=64, learning_rate=1e-2)
    solution = solve_terminal_pde(
        lambda t, x, u, u_x, u_xx: 0.5 * SIGMA**2 * u_xx, jnp.sin, exact, config, 1000,
        key=jax.random.key(0), learning_rate_decay=0.05,
    )
    error = grid_error(solution.params, exact)
    assert solution.losses.shape == (1000,)
    assert solution.losses[-50:].mean() < 0.01 * solution.losses[:50].mean()
    assert error.max() < 0.02  # measured 0.0079 (mean 0.001) on a 21 x 61 grid of [0, 1] x [-3, 3]


def test_kernel_b_hjb_is_the_heat_equation_after_cole_hopf():
    # Kernel B's own Galerkin loss and Adam loop with theta = 0: V_t + s^2/2 V_zz - s^2/2 V_z^2 = 0.
    # w = exp(-V) solves w_t + s^2/2 w_zz = 0 (Cole-Hopf), so a Gaussian terminal density
    # w(T) = N(0, v0) gives w(t) = N(0, v0 + s^2 (T - t)) and V = z^2 / (2 v) + log(2 pi v) / 2.
    v0 = 1.0

    def exact(t, z):
        variance = v0 + SIGMA**2 * (HORIZON - t)
        return z**2 / (2 * variance) + 0.5 * jnp.log(2 * jnp.pi * variance)

    f32 = jnp.float32
    problem = DGMProblem(
        theta=f32(0.0), sigma=f32(SIGMA), terminal_points=jnp.zeros(1, f32),
        terminal_weights=jnp.ones(1, f32), bandwidth=f32(np.sqrt(v0)),
    )
    config = DGMConfig(horizon=HORIZON, domain=DOMAIN, collocation=64)
    state = init_dgm(jax.random.key(0), problem, config)
    fit = jax.jit(lambda state, key: train(
        state, key, 1000, config,
        terminal=lambda p, z: exact(HORIZON, z), boundary=lambda p, t, z: exact(t, z),
    ), compiler_options=TRAIN_COMPILER_OPTIONS)
    state, _ = fit(state, jax.random.key(1))
    error = grid_error(state.params, exact)
    assert error.max() < 0.1  # measured 0.061 (mean 0.008), where V spans 0.9 .. 5.4
    t, z = np.meshgrid(np.linspace(0, HORIZON, 21), np.linspace(-DOMAIN, DOMAIN, 61))
    heat = np.exp(-np.asarray(jax.vmap(value, in_axes=(None, 0, 0))(
        state.params, jnp.asarray(t.ravel(), f32), jnp.asarray(z.ravel(), f32))))
    assert np.abs(heat - np.exp(-np.asarray(exact(t.ravel(), z.ravel())))).max() < 0.01  # measured 0.0029


def test_zero_steps_refused():
    with pytest.raises(ValueError, match="steps"):
        solve_terminal_pde(lambda *a: a[4], jnp.sin, lambda t, x: x, DGMConfig(), 0, key=jax.random.key(0))
