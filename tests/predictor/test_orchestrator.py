"""Orchestrator: weights stay on the simplex under any input; the Sinkhorn fallback path works."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosfm.predictor import OrchestratorConfig
from chaosfm.predictor._orchestrator import (
    init_orchestrator,
    mixing_weights,
    update_orchestrator,
)

CONFIG = OrchestratorConfig()


@functools.partial(jax.jit, static_argnames="config")
def _step(weights, predictions, observed, alarm, emergency, config):
    state = init_orchestrator(4)._replace(weights=weights)
    return update_orchestrator(
        state, predictions, observed, alarm=alarm, emergency=emergency, config=config
    )


def _assert_simplex(weights):
    w = np.asarray(weights, np.float64)
    assert np.all(np.isfinite(w))
    assert np.all(w >= 0)
    assert abs(w.sum() - 1.0) < 1e-5


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=150, deadline=None)
@given(
    raw_weights=st.lists(st.floats(0.0, 1.0, width=32), min_size=4, max_size=4),
    predictions=st.lists(floats, min_size=4, max_size=4),
    observed=floats,
    alarm=st.booleans(),
    emergency=st.booleans(),
)
def test_weights_stay_on_the_simplex_under_any_input(raw_weights, predictions, observed, alarm, emergency):
    w = np.asarray(raw_weights, np.float32) + 1e-6
    w = w / w.sum()
    out, state = _step(
        jnp.asarray(w), jnp.asarray(predictions, jnp.float32), jnp.float32(observed),
        jnp.asarray(alarm), jnp.asarray(emergency), CONFIG,
    )
    _assert_simplex(out.weights)
    _assert_simplex(state.weights)
    _assert_simplex(mixing_weights(state, jnp.asarray(emergency), 3))


def test_weight_moves_towards_the_accurate_kernel():
    state = init_orchestrator(4)
    step = jax.jit(lambda s, p, y: update_orchestrator(
        s, p, y, alarm=jnp.asarray(False), emergency=jnp.asarray(False), config=CONFIG))
    rng = np.random.default_rng(0)
    for _ in range(60):
        y = rng.standard_normal()
        predictions = jnp.asarray([y + 0.1 * rng.standard_normal(), -y, 2.0, y + 1.5], jnp.float32)
        out, state = step(state, predictions, jnp.float32(y))
        assert bool(out.sinkhorn_converged) and not bool(out.fallback)
    assert int(np.argmax(np.asarray(state.weights))) == 0
    assert float(state.weights[0]) > 0.5


def test_non_convergence_retries_then_falls_back_to_uniform():
    # One Sinkhorn iteration with a threshold no solver meets: both attempts fail.
    stubborn = OrchestratorConfig(
        sinkhorn_max_iterations=1, sinkhorn_inner_iterations=1, sinkhorn_threshold=1e-30, epsilon=1e-3
    )
    w = jnp.asarray([0.7, 0.1, 0.1, 0.1], jnp.float32)
    out, state = _step(
        w, jnp.asarray([0.0, 3.0, -2.0, 1.0], jnp.float32), jnp.float32(2.5),
        jnp.asarray(False), jnp.asarray(False), stubborn,
    )
    assert bool(out.fallback)
    assert not bool(out.sinkhorn_converged)
    assert int(out.sinkhorn_iterations) >= 2  # the doubled-epsilon retry ran
    np.testing.assert_allclose(np.asarray(state.weights), 0.25, atol=1e-6)


def test_retry_with_doubled_epsilon_can_rescue():
    from chaosfm.predictor._orchestrator import _sinkhorn, project

    # Find an iteration cap that fails at epsilon and succeeds at 2 epsilon (fewer iterations).
    source = jnp.asarray([0.7, 0.1, 0.1, 0.1])
    target = jnp.asarray([0.1, 0.2, 0.3, 0.4])
    p = jnp.asarray([0.0, 1.0, 2.0, 3.0])
    cost = (p[:, None] - p[None, :]) ** 2 / 10.0
    config = OrchestratorConfig(
        epsilon=0.01, sinkhorn_inner_iterations=1, sinkhorn_max_iterations=2000, sinkhorn_momentum=1.0
    )
    solve = jax.jit(_sinkhorn, static_argnums=(3, 4))
    _, ok, needed, _ = solve(source, target, cost, 0.01, config)
    _, ok2, needed2, _ = solve(source, target, cost, 0.02, config)
    assert bool(ok) and bool(ok2) and int(needed2) < int(needed)
    capped = config.model_copy(update={"sinkhorn_max_iterations": int(needed2) + 1})
    new, converged, iterations, degraded, duals = jax.jit(project, static_argnums=3)(source, target, p, capped)
    assert bool(converged) and not bool(degraded)
    assert int(iterations) > int(needed2)  # the first attempt ran to its cap, then the retry
    _assert_simplex(new)
    np.testing.assert_array_equal(np.asarray(duals), 0.0)  # 2-epsilon duals are no warm start


def test_warm_start_and_momentum_reach_the_plain_solution_in_fewer_iterations():
    from chaosfm.predictor._orchestrator import project

    rng = np.random.default_rng(0)
    fast = OrchestratorConfig()
    plain = fast.model_copy(update={"sinkhorn_momentum": 1.0})
    solve = jax.jit(project, static_argnums=3)
    duals = jnp.zeros((2, 4))
    weights = jnp.full((4,), 0.25)
    cold_total = warm_total = plain_total = 0
    p = jnp.asarray(rng.normal(size=4), jnp.float32)
    for _ in range(20):
        # Kernel predictions drift slowly from step to step, as they do on a live series.
        p = p + jnp.asarray(0.05 * rng.normal(size=4), jnp.float32)
        proposal = jax.nn.softmax(jnp.log(weights) - 0.5 * p)
        reference, ok_plain, it_plain, _, _ = solve(weights, proposal, p, plain)
        cold, ok_cold, it_cold, _, _ = solve(weights, proposal, p, fast)
        warm, ok_warm, it_warm, _, duals = solve(weights, proposal, p, fast, duals)
        assert bool(ok_plain) and bool(ok_cold) and bool(ok_warm)
        # Each stops within the marginal threshold of the same fixed point.
        np.testing.assert_allclose(np.asarray(warm), np.asarray(reference), atol=3e-3)
        np.testing.assert_allclose(np.asarray(cold), np.asarray(reference), atol=3e-3)
        plain_total += int(it_plain)
        cold_total += int(it_cold)
        warm_total += int(it_warm)
        weights = warm
    assert warm_total < cold_total < plain_total, (warm_total, cold_total, plain_total)


def test_alarm_resets_and_emergency_selects_kernel_d():
    w = jnp.asarray([0.7, 0.1, 0.1, 0.1], jnp.float32)
    p = jnp.asarray([0.1, 0.2, 0.3, 0.4], jnp.float32)
    out, state = _step(w, p, jnp.float32(0.1), jnp.asarray(True), jnp.asarray(False), CONFIG)
    np.testing.assert_allclose(np.asarray(state.weights), 0.25, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mixing_weights(state, jnp.asarray(True), 3)), [0, 0, 0, 1])
