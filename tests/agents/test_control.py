"""The Lorenz-63 control task: the field against the formula by hand, RK4 against scipy's adaptive
solver, the fixed points at rest, starts on the attractor, and the reward, done and success logic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from chaosfm.agents import (
    LorenzControlConfig,
    LorenzControlState,
    lorenz_control_dynamics,
    lorenz_control_reset,
    lorenz_control_reward,
    lorenz_control_step,
    lorenz_control_success,
    lorenz_controlled_field,
    lorenz_fixed_point,
    rk4_step,
)

CONFIG = LorenzControlConfig(u_max=2.0, episode_steps=3, success_window=2, action_cost=0.5)


def test_field_by_hand():
    # x' = 10 (y - x) + u0, y' = x (28 - z) - y + u1, z' = x y - 8/3 z + u2 at (1, 2, 3), u = (0.5, -1, 2)
    got = lorenz_controlled_field(CONFIG, jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([0.5, -1.0, 2.0]))
    expected = [10.0 * (2.0 - 1.0) + 0.5, 1.0 * (28.0 - 3.0) - 2.0 - 1.0, 1.0 * 2.0 - 8.0 / 3.0 * 3.0 + 2.0]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_fixed_points_are_at_rest():
    for sign in (1, -1):
        config = CONFIG.replace(target_sign=sign)
        point = np.asarray(lorenz_fixed_point(config))
        arm = math.sqrt(8.0 / 3.0 * 27.0)
        np.testing.assert_allclose(point, [sign * arm, sign * arm, 27.0], rtol=1e-6)
        velocity = lorenz_controlled_field(config, jnp.asarray(point), jnp.zeros(3))
        np.testing.assert_allclose(np.asarray(velocity), 0.0, atol=1e-4)
        # a saddle-focus: the hand-written Jacobian's eigenvalues are -13.85 and 0.094 +- 10.19i
        # (the module docstring's numbers), and jax.jacfwd of the field gives the same
        x, y, z = point
        jacobian = np.array([[-10.0, 10.0, 0.0], [28.0 - z, -1.0, -x], [y, x, -8.0 / 3.0]])
        eigenvalues = np.sort_complex(np.linalg.eigvals(jacobian))
        np.testing.assert_allclose(eigenvalues, [-13.8546, 0.0940 - 10.1945j, 0.0940 + 10.1945j], atol=1e-3)
        automatic = jax.jacfwd(lambda p: lorenz_controlled_field(config, p, jnp.zeros(3)))(jnp.asarray(point))
        np.testing.assert_allclose(np.asarray(automatic), jacobian, atol=1e-4)
        # and one uncontrolled decision leaves it there (to float32 rounding; it is unstable, slowly)
        np.testing.assert_allclose(np.asarray(lorenz_control_dynamics(config, jnp.asarray(point), jnp.zeros(3))),
                                   point, atol=1e-4)


@pytest.mark.parametrize("forcing", [(0.0, 0.0, 0.0), (2.0, -1.5, 0.7)])
def test_rk4_against_solve_ivp(forcing):
    # Half a time unit (5 decisions of 10 steps of 0.01) from a point on the attractor, the forcing
    # held, against scipy's RK45 at rtol 1e-11 in float64.
    start = np.array([-8.0, 7.0, 27.0])
    u = np.array(forcing)

    def field(t, s):
        x, y, z = s
        return [10.0 * (y - x) + u[0], x * (28.0 - z) - y + u[1], x * y - 8.0 / 3.0 * z + u[2]]

    times = 0.1 * np.arange(1, 6)
    reference = solve_ivp(field, (0.0, 0.5), start, method="RK45", t_eval=times, rtol=1e-11, atol=1e-11).y.T
    position = jnp.asarray(start, jnp.float32)
    decide = jax.jit(lambda p: lorenz_control_dynamics(CONFIG, p, jnp.asarray(u, jnp.float32)))
    got = []
    for _ in times:
        position = decide(position)
        got.append(np.asarray(position))
    # RK4's global error at dt = 0.01 is ~1e-6 here; float32 rounding, amplified by chaos, ~1e-4
    np.testing.assert_allclose(np.array(got), reference, atol=2e-3, rtol=0)
    # and one generic rk4_step of a linear field against the exponential's Taylor series to 4th order
    step = np.asarray(rk4_step(lambda s: -2.0 * s, jnp.asarray([1.0]), 0.1))
    np.testing.assert_allclose(step, [1 - 0.2 + 0.2**2 / 2 - 0.2**3 / 6 + 0.2**4 / 24], rtol=1e-6)


def test_forcing_is_clipped_to_the_bound():
    start = jnp.asarray([-8.0, 7.0, 27.0])
    at_bound = lorenz_control_dynamics(CONFIG, start, jnp.asarray([2.0, -2.0, 2.0]))
    beyond = lorenz_control_dynamics(CONFIG, start, jnp.asarray([50.0, -9.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(at_bound), np.asarray(beyond))
    assert not np.allclose(np.asarray(at_bound), np.asarray(lorenz_control_dynamics(CONFIG, start, jnp.zeros(3))))


def test_reset_lands_on_the_attractor(key):
    reset = jax.jit(jax.vmap(lambda k: lorenz_control_reset(CONFIG, key=k)))
    states = reset(jax.random.split(key, 64))
    position = np.asarray(states.position)
    assert np.all(np.asarray(states.step) == 0)
    # the attractor's box: |x| < 20, |y| < 28, 0 < z < 50; starts spread over both lobes
    assert np.all(np.abs(position[:, 0]) < 20) and np.all(np.abs(position[:, 1]) < 28)
    assert np.all((position[:, 2] > 0) & (position[:, 2] < 50))
    assert 10 < np.sum(position[:, 0] > 0) < 54
    # the same keys give the same starts (20 time units of chaos amplify rounding ~e^18, so this is
    # bit-identical only for the same compiled function on the same machine)
    np.testing.assert_array_equal(np.asarray(reset(jax.random.split(key, 64)).position), position)
    assert len(np.unique(position[:, 0])) == 64


def test_reward_done_and_success():
    target = lorenz_fixed_point(CONFIG)
    offset = jnp.asarray([3.0, 0.0, 4.0])  # distance 5
    state = LorenzControlState(position=target, step=jnp.asarray(0, jnp.int32))
    action = jnp.asarray([2.0, -1.0, 0.0])
    # reward at a hand-made position: -5 - 0.5 * mean((1, 0.25, 0))
    reward = lorenz_control_reward(CONFIG, target + offset, action)
    np.testing.assert_allclose(float(reward), -5.0 - 0.5 * (1.0 + 0.25) / 3.0, rtol=1e-5)
    # a clipped action costs as the bound
    np.testing.assert_allclose(float(lorenz_control_reward(CONFIG, target + offset, jnp.asarray([9.0, -1.0, 0.0]))),
                               float(reward), rtol=1e-6)
    dones = []
    for expected_step in (1, 2, 3):
        new_state, step_reward, done = lorenz_control_step(CONFIG, state, action)
        assert int(new_state.step) == expected_step
        reached = lorenz_control_dynamics(CONFIG, state.position, action)
        np.testing.assert_array_equal(np.asarray(new_state.position), np.asarray(reached))
        np.testing.assert_allclose(float(step_reward), float(lorenz_control_reward(CONFIG, reached, action)))
        dones.append(bool(done))
        state = new_state
    assert dones == [False, False, True]
    # success: the last success_window (2) distances all within tolerance (1.0)
    distances = jnp.asarray([[5.0, 0.5, 0.9], [0.1, 0.2, 1.1], [0.5, 1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(lorenz_control_success(CONFIG, distances)), [True, False, True])
    with pytest.raises(ValueError, match="success_window"):
        lorenz_control_success(CONFIG, jnp.asarray([0.1]))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="u_max"):
        LorenzControlConfig(u_max=0.0)
    with pytest.raises(ValueError, match="target_sign"):
        LorenzControlConfig(target_sign=0)
    with pytest.raises(ValueError, match="success_window"):
        LorenzControlConfig(episode_steps=10, success_window=20)
    with pytest.raises(ValueError, match="rho"):
        LorenzControlConfig(rho=0.5)
