"""MPPI planning: the first action on a linear-quadratic problem against the Riccati (LQR) action,
more iterations never worse, jit and vmap shapes, determinism under one key, bounds respected,
the policy prior's rollouts, random shooting, and clear config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from chaosfm.agents import MPPIConfig, mppi_plan, random_shooting_plan, rollout_return

# A discretised double integrator (position, velocity) pushed by one force, 0.2 time units a step.
A = np.array([[1.0, 0.2], [0.0, 1.0]])
B = np.array([[0.02], [0.2]])
Q = np.eye(2)
R = np.array([[0.5]])
P = scipy.linalg.solve_discrete_are(A, B, Q, R)
K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)  # u = -K x is optimal for sum x'Qx + u'Ru


def _make_lqr_model():
    a, b, q, r, p = (jnp.asarray(m, jnp.float32) for m in (A, B, Q, R, P))
    dynamics = lambda x, u: a @ x + b @ u  # noqa: E731
    reward = lambda x, u: -(x @ q @ x + u @ r @ u)  # noqa: E731
    value = lambda x: -(x @ p @ x)  # noqa: E731
    return dynamics, reward, value


_LQR_MODEL = _make_lqr_model()  # one set of functions, so the planner compiles once per config


def _lqr_model():
    return _LQR_MODEL


LQR_CONFIG = MPPIConfig(action_dim=1, horizon=5, num_samples=512, num_elites=64, iterations=8, temperature=1.0,
                        min_std=0.01, max_std=2.0, action_low=-10.0, action_high=10.0, discount=1.0)
STATES = jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)


def _plan_many(config, states, key, **kwargs):
    dynamics, reward, value = _lqr_model()
    keys = jax.random.split(key, len(states))
    return jax.vmap(lambda x, k: mppi_plan(config, dynamics, reward, value, x, key=k, **kwargs))(states, keys)


def test_first_action_matches_lqr(key):
    # With the terminal value -x'Px of the discrete algebraic Riccati equation, the H-step problem
    # has the infinite-horizon LQR solution: the optimal first action is -Kx for every H.
    result = _plan_many(LQR_CONFIG, STATES, key)
    lqr = -np.asarray(STATES) @ K.T  # (8, 1)
    assert np.abs(lqr).max() > 2.0  # the states ask for actions of several units, not near 0
    np.testing.assert_allclose(np.asarray(result.action), lqr, atol=0.03)
    # and the planned return is the optimal value -x'Px, which it can never exceed
    optimal = -np.einsum("bi,ij,bj->b", np.asarray(STATES), P, np.asarray(STATES))
    np.testing.assert_allclose(np.asarray(result.planned_return), optimal, rtol=1e-3, atol=1e-3)
    assert np.all(np.asarray(result.planned_return) <= optimal + 1e-3 * np.abs(optimal))


def test_more_iterations_do_not_worsen_the_planned_return(key):
    returns = [np.asarray(_plan_many(LQR_CONFIG.replace(iterations=n), STATES, key).planned_return)
               for n in (1, 3, 8)]
    for fewer, more in zip(returns, returns[1:]):
        assert np.all(more >= fewer - 1e-3 * np.abs(fewer)), (fewer, more)
    optimal = -np.einsum("bi,ij,bj->b", np.asarray(STATES), P, np.asarray(STATES))
    assert (optimal - returns[0]).mean() > 10 * (optimal - returns[-1]).mean()  # and they do improve it


def test_rollout_return_by_hand():
    dynamics, reward, value = _lqr_model()
    x = np.array([1.0, -0.5])
    actions = np.array([[0.3], [-0.2], [0.1]])
    total, scale = 0.0, 1.0
    for u in actions:
        total += scale * -(x @ Q @ x + u @ R @ u)
        x, scale = A @ x + B @ u, scale * 0.9
    total += scale * -(x @ P @ x)
    got = rollout_return(dynamics, reward, value, jnp.asarray([1.0, -0.5]), jnp.asarray(actions, jnp.float32), 0.9)
    np.testing.assert_allclose(float(got), total, rtol=1e-5)


def test_shapes_determinism_and_jit_under_vmap(key):
    config = LQR_CONFIG.replace(num_samples=64, num_elites=8, iterations=2, horizon=4)
    plan = jax.jit(lambda states, k: _plan_many(config, states, k))
    first, second = plan(STATES, key), plan(STATES, key)
    assert first.action.shape == (8, 1)
    assert first.mean.shape == first.std.shape == first.next_mean.shape == (8, 4, 1)
    assert first.planned_return.shape == (8,)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = plan(STATES, jax.random.key(1))
    assert not np.array_equal(np.asarray(first.action), np.asarray(other.action))
    # vmap over states equals one call per state with the same keys
    dynamics, reward, value = _lqr_model()
    keys = jax.random.split(key, len(STATES))
    one = mppi_plan(config, dynamics, reward, value, STATES[3], key=keys[3])
    np.testing.assert_allclose(np.asarray(one.action), np.asarray(first.action[3]), rtol=1e-5, atol=1e-6)
    # the warm start is the mean shifted one step, the new last step at the centre of the bounds
    np.testing.assert_array_equal(np.asarray(first.next_mean[:, :-1]), np.asarray(first.mean[:, 1:]))
    np.testing.assert_array_equal(np.asarray(first.next_mean[:, -1]), 0.0)
    np.testing.assert_array_equal(np.asarray(first.action), np.asarray(first.mean[:, 0]))


def test_bounds_are_respected(key):
    # The unconstrained optimum needs |u| of several units; with bounds [-0.5, 0.25] every action of
    # every plan, and the warm start, stays inside them, and the decision presses on the bound.
    config = LQR_CONFIG.replace(action_low=-0.5, action_high=0.25, max_std=1.0, iterations=3)
    states = STATES * 3.0
    result = _plan_many(config, states, key)
    for array in (result.action, result.mean, result.next_mean):
        assert np.all(np.asarray(array) >= -0.5) and np.all(np.asarray(array) <= 0.25)
    lqr = (-np.asarray(states) @ K.T)[:, 0]
    action = np.asarray(result.action)[:, 0]
    assert np.all(action[lqr > 1.0] > 0.2) and np.all(action[lqr < -1.0] < -0.45)
    shot = jax.vmap(lambda x, k: random_shooting_plan(config, *_lqr_model(), x, key=k))(
        states, jax.random.split(key, len(states)))
    assert np.all(np.asarray(shot.mean) >= -0.5) and np.all(np.asarray(shot.mean) <= 0.25)


def test_random_shooting_returns_its_best_sample(key):
    config = LQR_CONFIG.replace(num_samples=256, iterations=1)
    dynamics, reward, value = _lqr_model()
    x = STATES[0]
    result = random_shooting_plan(config, dynamics, reward, value, x, key=key)
    candidates = jax.random.uniform(key, (256, config.horizon, 1), minval=config.action_low,
                                    maxval=config.action_high)
    returns = jax.vmap(lambda a: rollout_return(dynamics, reward, value, x, a, config.discount))(candidates)
    np.testing.assert_allclose(float(result.planned_return), float(returns.max()), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(result.action), np.asarray(candidates[jnp.argmax(returns), 0]))


def test_policy_prior_rollouts_join_the_candidates(key):
    # A prior that plays the LQR action exactly: with it among the candidates a single iteration
    # of few samples already lands near -Kx, which the same search without it does not.
    dynamics, reward, value = _lqr_model()
    gain = jnp.asarray(K, jnp.float32)
    policy = lambda x, *, key: -gain @ x  # noqa: E731
    config = LQR_CONFIG.replace(num_samples=16, num_elites=1, iterations=1, num_policy_samples=1)
    lqr = -np.asarray(STATES) @ K.T
    with_prior = jax.vmap(lambda x: mppi_plan(config, dynamics, reward, value, x, policy=policy, key=key))(STATES)
    without = jax.vmap(lambda x: mppi_plan(config.replace(num_policy_samples=0), dynamics, reward, value, x,
                                           key=key))(STATES)
    np.testing.assert_allclose(np.asarray(with_prior.action), lqr, atol=1e-4)
    assert np.abs(np.asarray(without.action) - lqr).max() > 0.1
    with pytest.raises(ValueError, match="policy"):
        mppi_plan(config, dynamics, reward, value, STATES[0], key=key)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="num_elites"):
        MPPIConfig(action_dim=1, num_samples=8, num_elites=9)
    with pytest.raises(ValueError, match="temperature"):
        MPPIConfig(action_dim=1, temperature=0.0)
    with pytest.raises(ValueError, match="min_std"):
        MPPIConfig(action_dim=1, min_std=3.0, max_std=2.0)
    with pytest.raises(ValueError, match="action_low"):
        MPPIConfig(action_dim=1, action_low=1.0, action_high=1.0)
    with pytest.raises(ValueError, match="horizon"):
        MPPIConfig(action_dim=1, horizon=0)
    with pytest.raises(ValueError, match="mean"):
        mppi_plan(LQR_CONFIG, *_lqr_model(), STATES[0], jnp.zeros((3, 1)), key=jax.random.key(0))
    with pytest.raises(TypeError):
        mppi_plan(LQR_CONFIG, *_lqr_model(), STATES[0])  # no key
