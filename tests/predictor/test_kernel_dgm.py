"""Kernel B: the DGM network solves the HJB against its Riccati solution; the monitor flags collapse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from chaosfm.predictor import DGMConfig
from chaosfm.predictor._kernel_dgm import (
    TRAIN_COMPILER_OPTIONS,
    DGMProblem,
    collapse_monitor,
    init_dgm,
    init_params,
    optimal_drift,
    predict_dgm,
    train,
    update_dgm,
    value,
)

THETA, SIGMA, GAMMA = 0.5, 1.0, 1.0
CONFIG = DGMConfig(horizon=1.0, domain=2.0, width=12, collocation=32, learning_rate=1e-2)


def _riccati():
    # V = P(t) z^2 / 2 + c(t):  P' = 2 theta P + sigma^2 P^2,  c' = -sigma^2 P / 2,  P(T) = gamma.
    def rhs(t, y):
        p, _ = y
        return [2 * THETA * p + SIGMA**2 * p**2, -0.5 * SIGMA**2 * p]

    sol = solve_ivp(rhs, [CONFIG.horizon, 0.0], [GAMMA, 0.0], dense_output=True, rtol=1e-10, atol=1e-12)
    return lambda t: sol.sol(t)


@pytest.mark.slow  # ~10 s: compiling the Galerkin training step
def test_dgm_matches_riccati_solution(key):
    exact = _riccati()
    problem = DGMProblem(
        theta=jnp.float32(THETA), sigma=jnp.float32(SIGMA), terminal_points=jnp.zeros(1),
        terminal_weights=jnp.ones(1), bandwidth=jnp.float32(1.0),
    )

    def terminal(problem, z):
        return 0.5 * GAMMA * z**2

    # Exact Dirichlet data on the sides from the Riccati solution, tabulated for jit.
    grid_t = np.linspace(0.0, CONFIG.horizon, 101)
    table = np.stack([exact(t) for t in grid_t])  # (101, 2): P, c

    def boundary(problem, t, z):
        p = jnp.interp(t, grid_t, table[:, 0])
        c = jnp.interp(t, grid_t, table[:, 1])
        return 0.5 * p * z**2 + c

    key_init, key_train = jax.random.split(key)
    state = init_dgm(key_init, problem, CONFIG)
    run = jax.jit(
        lambda s, k: train(s, k, 500, CONFIG, terminal=terminal, boundary=boundary),
        compiler_options=TRAIN_COMPILER_OPTIONS,
    )
    state, loss = run(state, key_train)
    assert float(loss) < 1e-2
    z = jnp.linspace(-1.5, 1.5, 13)
    v_z = jax.vmap(jax.grad(value, argnums=2), in_axes=(None, None, 0))(state.params, jnp.float32(0.0), z)
    p0 = exact(0.0)[0]
    np.testing.assert_allclose(np.asarray(v_z), p0 * np.asarray(z), atol=0.15)
    entropy, collapsed = collapse_monitor(state.params, CONFIG)
    assert not bool(collapsed)


def test_constant_network_reads_as_collapsed(key):
    params = init_params(key, CONFIG)
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    entropy, collapsed = collapse_monitor(params, CONFIG)
    assert float(entropy) > 0.999
    assert bool(collapsed)


@pytest.mark.slow  # ~10 s: compiling the Galerkin training step
def test_online_update_predicts_reversion_towards_the_recent_mean(key):
    rng = np.random.default_rng(0)
    path = np.zeros(128)
    for t in range(1, 128):
        path[t] = 0.8 * path[t - 1] + rng.standard_normal()
    path[-1] = path.mean() + 2.5 * path.std()  # far above where the path has lived
    path = jnp.asarray(path, jnp.float32)
    weights = jnp.ones(128)
    from chaosfm.predictor._kernel_dgm import fit_problem

    problem, _, _ = fit_problem(path, weights)
    config = DGMConfig(online_steps=10)
    state = init_dgm(key, problem, config)
    update = jax.jit(lambda s, p, w, k: update_dgm(s, p, w, config, key=k), compiler_options=TRAIN_COMPILER_OPTIONS)
    out, state = update(state, path, weights, key)
    assert float(out.prediction) < 0.0
    assert np.isfinite(float(out.loss))


def test_tabulated_drift_matches_the_network_gradient(key):
    # The per-step drift interpolates V_z from the table made at init/training; against the
    # exact gradient of a random (untrained, so wigglier than a fit) network: within 1e-3 sigma.
    problem = DGMProblem(
        theta=jnp.float32(0.3), sigma=jnp.float32(0.8),
        terminal_points=jnp.zeros(4), terminal_weights=jnp.ones(4), bandwidth=jnp.float32(0.5),
    )
    config = DGMConfig()
    state = init_dgm(key, problem, config)
    path = jnp.asarray(np.random.default_rng(0).standard_normal(64).cumsum(), jnp.float32)
    weights = jnp.ones(64)
    for last in np.linspace(-3.0, 3.0, 25):
        moved = path.at[-1].set(last)
        mean, std = jnp.mean(moved), jnp.std(moved)
        z = jnp.clip((moved[-1] - mean) / (std + 0.0), -config.domain, config.domain)
        exact = float(jnp.clip(optimal_drift(state.params, problem, z), -5, 5) * std)
        got = float(predict_dgm(state, moved, weights, config))
        assert abs(got - exact) < 1e-3 * float(std) + 1e-5, (last, got, exact)


def test_predictive_std_is_the_spread_of_the_increments(key):
    # Standardised increments of unit variance: the kernel's one-step spread must be ~1 in the
    # path's units. The OU sigma alone is in units of z (the path over its own standard
    # deviation): ~0.2 here, which is what the draws used to be spread by.
    from chaosfm.predictor._kernel_dgm import fit_problem, predictive_std

    rng = np.random.default_rng(0)
    spreads, sigmas = [], []
    for _ in range(20):
        increments = rng.standard_normal(128)
        path = jnp.asarray(increments.cumsum(), jnp.float32)
        weights = jnp.ones(128)
        problem, _, _ = fit_problem(path, weights)
        state = init_dgm(key, problem, DGMConfig())
        spreads.append(float(predictive_std(state, path, weights)) / increments.std())
        sigmas.append(float(problem.sigma))
    assert abs(np.mean(spreads) - 1.0) < 0.05, np.mean(spreads)
    assert np.mean(sigmas) < 0.5  # the unit mismatch this guards against is real
