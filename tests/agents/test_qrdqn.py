"""QR-DQN with a CVaR critic: shapes, acting, the target update, and a risk-sensitive bandit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from chaosfm.agents import (
    QRDQNConfig,
    QuantileNetwork,
    Transition,
    cvar_from_quantiles,
    qrdqn_act,
    qrdqn_init,
    qrdqn_loss,
    qrdqn_train_step,
    quantile_midpoints,
    replay_add_batch,
    replay_init,
    replay_sample,
)


def _batch(rng, size, obs_dim, n_actions, done=0.0):
    return Transition(
        obs=jnp.asarray(rng.standard_normal((size, obs_dim)), jnp.float32),
        action=jnp.asarray(rng.integers(0, n_actions, size), jnp.int32),
        reward=jnp.asarray(rng.standard_normal(size), jnp.float32),
        next_obs=jnp.asarray(rng.standard_normal((size, obs_dim)), jnp.float32),
        done=jnp.full((size,), done, jnp.float32),
    )


def test_config_validates():
    with pytest.raises(ValueError, match=r"gamma: must lie in \[0, 1\].*alpha: must lie in \(0, 1\]"):
        QRDQNConfig(obs_dim=2, n_actions=3, alpha=0.0, gamma=1.5)
    with pytest.raises(ValueError, match="n_quantiles"):
        QRDQNConfig(obs_dim=2, n_actions=3, n_quantiles=0)
    config = QRDQNConfig(obs_dim=2, n_actions=3, epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=10)
    np.testing.assert_allclose([config.epsilon(0), config.epsilon(5), config.epsilon(100)], [1.0, 0.55, 0.1])


def test_network_shapes_and_acting(key):
    config = QRDQNConfig(obs_dim=4, n_actions=3, n_quantiles=8, hidden=16)
    net = QuantileNetwork(config, key=key)
    obs = jnp.ones((4,))
    assert net(obs).shape == (3, 8)
    assert jax.vmap(net)(jnp.ones((5, 4))).shape == (5, 3, 8)
    greedy = int(jnp.argmax(cvar_from_quantiles(net(obs), 0.25)))
    keys = jax.random.split(key, 200)
    acts = jax.vmap(lambda k: qrdqn_act(net, obs, alpha=0.25, epsilon=0.0, key=k))(keys)
    assert acts.dtype == jnp.int32 and np.all(np.asarray(acts) == greedy)
    explored = np.asarray(jax.vmap(lambda k: qrdqn_act(net, obs, alpha=0.25, epsilon=1.0, key=k))(keys))
    assert set(explored.tolist()) == {0, 1, 2}
    # Deterministic per key.
    assert int(qrdqn_act(net, obs, alpha=0.25, epsilon=0.5, key=keys[0])) == int(
        qrdqn_act(net, obs, alpha=0.25, epsilon=0.5, key=keys[0]))


def test_loss_target_is_reward_plus_discounted_cvar_greedy_atoms(key):
    config = QRDQNConfig(obs_dim=2, n_actions=3, n_quantiles=4, hidden=8, gamma=0.9, alpha=0.5)
    online, target = QuantileNetwork(config, key=key), QuantileNetwork(config, key=jax.random.fold_in(key, 1))
    batch = _batch(np.random.default_rng(0), 6, 2, 3)
    batch = batch._replace(done=jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]))
    loss, metrics = qrdqn_loss(online, target, batch, config=config)
    # The same target written out with numpy.
    next_atoms = np.asarray(jax.vmap(target)(batch.next_obs))  # (B, A, N)
    lowest_half = np.sort(next_atoms, axis=-1)[..., :2].mean(-1)  # CVaR_0.5 of 4 atoms
    best = np.argmax(lowest_half, axis=-1)
    bellman = (np.asarray(batch.reward)[:, None] + 0.9 * (1 - np.asarray(batch.done))[:, None]
               * next_atoms[np.arange(6), best])
    atoms = np.asarray(jax.vmap(online)(batch.obs))[np.arange(6), np.asarray(batch.action)]
    taus = np.asarray(quantile_midpoints(4))
    u = bellman[:, None, :] - atoms[:, :, None]
    huber = np.where(np.abs(u) <= 1.0, 0.5 * u**2, np.abs(u) - 0.5)
    expected = np.mean(np.sum(np.mean(np.abs(taus[None, :, None] - (u < 0)) * huber, -1), -1))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["target_mean"]) == pytest.approx(bellman.mean(), rel=1e-5)
    # No gradient flows into the target network.
    grads = jax.grad(lambda t: qrdqn_loss(online, t, batch, config=config)[0])(target)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("tau", [None, 0.5])
def test_target_network_updates(key, tau):
    config = QRDQNConfig(obs_dim=2, n_actions=2, n_quantiles=4, hidden=8, target_update_every=3, target_tau=tau,
                         learning_rate=1e-2)
    state = qrdqn_init(config, key=key)
    batch = _batch(np.random.default_rng(1), 8, 2, 2)

    def leaf(params):
        return np.asarray(params.head.bias)

    first_target = leaf(state.target_params)
    for step in range(1, 4):
        state, metrics = qrdqn_train_step(state, batch, config=config)
        assert int(state.step) == step and np.isfinite(float(metrics["loss"]))
        if tau is None:
            expected = leaf(state.params) if step == 3 else first_target
            np.testing.assert_array_equal(leaf(state.target_params), expected)
        else:
            assert not np.array_equal(leaf(state.target_params), first_target)
            assert not np.array_equal(leaf(state.target_params), leaf(state.params))


def test_bandit_cvar_prefers_the_safer_arm(key):
    # One state, two arms, gamma = 0, done = 1: the critic learns each arm's reward distribution.
    # Arm 0 (A): N(1.0, 0.1). Arm 1 (B): 1.6 w.p. 0.9, -2.0 w.p. 0.1: a higher mean (1.24) and a
    # far worse lower tail. Risk-neutral (alpha = 1) picks B; CVaR_0.1 picks A.
    n_quantiles, size = 20, 4096
    config = QRDQNConfig(obs_dim=1, n_actions=2, n_quantiles=n_quantiles, hidden=16, layers=1, gamma=0.0,
                         learning_rate=1e-2, kappa=0.05, batch_size=64, buffer_size=size, alpha=1.0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size)
    rewards = np.where(actions == 0, 1.0 + 0.1 * rng.standard_normal(size),
                       np.where(rng.random(size) < 0.9, 1.6, -2.0))
    ones = np.ones((size, 1), np.float32)
    data = Transition(jnp.asarray(ones), jnp.asarray(actions, jnp.int32), jnp.asarray(rewards, jnp.float32),
                      jnp.asarray(ones), jnp.ones((size,), jnp.float32))
    buffer = replay_init(config.buffer_size, jax.tree_util.tree_map(lambda x: x[0], data))
    buffer = replay_add_batch(buffer, data)
    init_key, loop_key = jax.random.split(key)

    @jax.jit
    def train(state, keys):
        def step(state, sample_key):
            return qrdqn_train_step(state, replay_sample(buffer, config.batch_size, key=sample_key), config=config)
        return jax.lax.scan(step, state, keys)

    state, metrics = train(qrdqn_init(config, key=init_key), jax.random.split(loop_key, 600))
    assert float(jnp.mean(metrics["loss"][-50:])) < float(metrics["loss"][0])

    obs = jnp.ones((1,))
    learned = np.sort(np.asarray(state.params(obs)), axis=-1)  # (A, N)
    taus = np.asarray(quantile_midpoints(n_quantiles), np.float64)
    true_a = 1.0 + 0.1 * stats.norm.ppf(taus)
    true_b = np.where(taus < 0.1, -2.0, 1.6)
    np.testing.assert_allclose(learned[0], true_a, atol=0.1)
    np.testing.assert_allclose(learned[1], true_b, atol=0.2)

    cvar_mean = np.asarray(cvar_from_quantiles(jnp.asarray(learned), 1.0))
    cvar_tail = np.asarray(cvar_from_quantiles(jnp.asarray(learned), 0.1))
    np.testing.assert_allclose(cvar_mean, [1.0, 1.24], atol=0.08)
    np.testing.assert_allclose(cvar_tail, [1.0 - 0.1 * stats.norm.pdf(stats.norm.ppf(0.1)) / 0.1, -2.0], atol=0.1)

    choose = jax.jit(lambda alpha, k: qrdqn_act(state.params, obs, alpha=alpha, epsilon=0.0, key=k))
    assert int(choose(1.0, key)) == 1
    assert int(choose(0.1, key)) == 0
