"""TD-MPC2: each loss against a plain numpy reference, SimNorm, the CVaR of the ensemble by sorting
by hand, the convergence-to-alpha map at its knots, the policy loss's gradient stopping at the
critics, the policy's dependence on alpha when alpha is an input, the planner's shapes and bounds,
and a short training run that lowers the model's losses."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.agents import (
    LorenzControlConfig,
    MPPIConfig,
    TDMPC2Config,
    TDMPC2Policy,
    TDMPC2TrainConfig,
    TDMPC2WorldModel,
    consistency_loss,
    cvar_alpha,
    ensemble_cvar,
    episode_windows,
    quantile_td_loss,
    reward_loss,
    run_tdmpc2_episodes,
    simnorm,
    td_target,
    tdmpc2_init,
    tdmpc2_plan,
    tdmpc2_policy_loss,
    tdmpc2_update,
    tdmpc2_world_model_loss,
    train_tdmpc2_lorenz,
)

SMALL = TDMPC2Config(obs_dim=3, action_dim=2, latent_dim=16, simnorm_dim=4, hidden=32, num_q=3, num_quantiles=8)
RNG = np.random.default_rng(0)


def _huber(u, kappa):
    return np.where(np.abs(u) <= kappa, 0.5 * u**2, kappa * (np.abs(u) - 0.5 * kappa))


def test_simnorm_sums_to_one_per_group():
    z = jnp.asarray(RNG.normal(size=24) * 3, jnp.float32)
    out = np.asarray(simnorm(z, 6)).reshape(4, 6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    assert (out > 0).all()
    groups = np.asarray(z).reshape(4, 6)
    by_hand = np.exp(groups) / np.exp(groups).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, by_hand, rtol=1e-5)


def test_consistency_and_reward_losses_against_numpy():
    horizon, latent, rho = 4, 5, 0.5
    predicted, target = RNG.normal(size=(horizon, latent)), RNG.normal(size=(horizon, latent))
    expected = sum(rho**t * np.mean((predicted[t] - target[t]) ** 2) for t in range(horizon)) / horizon
    got = consistency_loss(jnp.asarray(predicted, jnp.float32), jnp.asarray(target, jnp.float32), rho)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # the target is under stop_gradient: no gradient flows into it
    grad = jax.grad(lambda t: consistency_loss(jnp.asarray(predicted, jnp.float32), t, rho))(
        jnp.asarray(target, jnp.float32))
    assert float(jnp.abs(grad).max()) == 0.0
    r_pred, r = RNG.normal(size=horizon), RNG.normal(size=horizon)
    expected = sum(rho**t * (r_pred[t] - r[t]) ** 2 for t in range(horizon)) / horizon
    np.testing.assert_allclose(float(reward_loss(jnp.asarray(r_pred, jnp.float32), jnp.asarray(r, jnp.float32),
                                                 rho)), expected, rtol=1e-5)


def test_quantile_td_loss_against_a_loop_over_quantiles():
    critics, horizon, atoms, rho, kappa = 3, 2, 5, 0.7, 1.0
    predicted = RNG.normal(size=(critics, horizon, atoms)) * 2
    target = RNG.normal(size=(horizon, atoms)) * 2
    taus = (2 * np.arange(atoms) + 1) / (2 * atoms)
    total = 0.0
    for k in range(critics):
        for t in range(horizon):
            per_step = 0.0
            for i in range(atoms):
                for j in range(atoms):
                    u = target[t, j] - predicted[k, t, i]
                    per_step += abs(taus[i] - (u < 0)) * _huber(u, kappa) / atoms
            total += rho**t * per_step
    expected = total / (critics * horizon)
    got = quantile_td_loss(jnp.asarray(predicted, jnp.float32), jnp.asarray(target, jnp.float32), rho, kappa)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_td_target_min_and_mean_of_sorted_atoms():
    reward = np.array([1.0, -2.0])
    next_q = RNG.normal(size=(2, 2, 4))
    ordered = np.sort(next_q, axis=-1)
    for reduce, combine in (("min", np.min), ("mean", np.mean)):
        expected = reward[:, None] + 0.9 * combine(ordered, axis=0)
        got = td_target(jnp.asarray(reward, jnp.float32), jnp.asarray(next_q, jnp.float32), 0.9, reduce)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.25, 0.3, 1.0])
def test_ensemble_cvar_by_sorting_by_hand(alpha):
    quantiles = RNG.normal(size=(3, 8))
    averaged = np.mean(np.sort(quantiles, axis=-1), axis=0)  # atom by atom over critics
    full = int(np.floor(alpha * 8 + 1e-9))
    partial = alpha * 8 - full
    tail = averaged[:full].sum() + (partial * averaged[full] if full < 8 else 0.0)
    expected = tail / (alpha * 8)
    np.testing.assert_allclose(float(ensemble_cvar(jnp.asarray(quantiles, jnp.float32), alpha)), expected, rtol=1e-5)
    # a traced level gives the same
    np.testing.assert_allclose(float(ensemble_cvar(jnp.asarray(quantiles, jnp.float32), jnp.float32(alpha))),
                               expected, rtol=1e-5)


def test_cvar_alpha_at_its_knots():
    config = SMALL.replace(no_trade=0.2, convergence_low=0.4, convergence_high=0.8, alpha_min=0.1, alpha_max=0.9)
    grid = jnp.asarray([0.0, 0.19, 0.2, 0.4, 0.6, 0.8, 1.0])
    alpha, trade = cvar_alpha(config, grid)
    np.testing.assert_allclose(np.asarray(alpha), [0.1, 0.1, 0.1, 0.1, 0.5, 0.9, 0.9], rtol=1e-6)
    assert np.asarray(trade).tolist() == [False, False, True, True, True, True, True]


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="target_reduce"):
        SMALL.replace(target_reduce="max")
    with pytest.raises(ValueError, match="latent_dim: must equal obs_dim"):
        SMALL.replace(encoder="frozen")
    with pytest.raises(ValueError, match="encoder: must be one of"):
        SMALL.replace(encoder="cnn")
    with pytest.raises(ValueError, match="no_trade, convergence_low"):
        SMALL.replace(no_trade=0.5)
    with pytest.raises(ValueError, match="target_subset"):
        SMALL.replace(target_subset=4)
    with pytest.raises(ValueError, match="seed_rounds"):
        TDMPC2TrainConfig(rounds=2, seed_rounds=3)


def test_policy_loss_gradient_does_not_reach_the_critics(key):
    state = tdmpc2_init(SMALL.replace(hidden_layers=1), key=key)  # one layer: a smaller program to compile
    latents = jax.vmap(jax.vmap(state.model.encode))(jnp.asarray(RNG.normal(size=(4, 3, 3)), jnp.float32))

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(both):
        policy, model = both
        return tdmpc2_policy_loss(policy, model, latents, 0.5, 1.0, key=jax.random.key(1))[0]

    policy_grad, model_grad = grads((state.policy, state.model))
    model_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(model_grad))
    policy_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(policy_grad))
    assert len(jax.tree_util.tree_leaves(model_grad.critics)) > 0  # the critics were differentiated, to zero
    assert model_norm == 0.0
    assert policy_norm > 0.0


def test_the_policy_sees_alpha_only_when_it_is_an_input(key):
    z = simnorm(jnp.asarray(RNG.normal(size=16), jnp.float32), 4)
    conditioned = TDMPC2Policy(SMALL.replace(alpha_input=True), key=key)
    low, high = conditioned.mode(z, 0.1), conditioned.mode(z, 1.0)
    assert float(jnp.max(jnp.abs(low - high))) > 1e-4
    # d mode / d alpha by autodiff is non-zero and agrees with a central difference.
    gradient = jax.jacobian(lambda a: conditioned.mode(z, a))(jnp.asarray(0.5, jnp.float32))
    step = 1e-2
    difference = (conditioned.mode(z, 0.5 + step) - conditioned.mode(z, 0.5 - step)) / (2 * step)
    assert float(jnp.max(jnp.abs(gradient))) > 1e-4
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(difference), rtol=2e-2, atol=1e-4)
    # The sample at one key moves with alpha too (the mean and the deviation both read it).
    sample_key = jax.random.key(7)
    assert float(jnp.max(jnp.abs(conditioned(z, 0.1, key=sample_key) - conditioned(z, 1.0, key=sample_key)))) > 1e-4
    # Without alpha_input the network is the latent's width and alpha changes nothing.
    plain = TDMPC2Policy(SMALL, key=key)
    assert plain.mlp.layers[0].in_features == SMALL.latent_dim
    assert conditioned.mlp.layers[0].in_features == SMALL.latent_dim + 1
    np.testing.assert_array_equal(np.asarray(plain.mode(z, 0.1)), np.asarray(plain.mode(z, 1.0)))


def test_planner_shapes_bounds_and_no_trade(key):
    state = tdmpc2_init(SMALL, key=key)
    plan = MPPIConfig(action_dim=2, horizon=3, num_samples=16, num_elites=4, iterations=2, action_low=-0.5,
                      action_high=0.8, discount=SMALL.discount, num_policy_samples=4)
    obs = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    obs = obs.at[1].set(obs[0])  # rows 0 and 1: one state, planned with one key, trading or not
    keys = jax.random.split(key, 5)
    keys = keys.at[1].set(keys[0])
    trade = jnp.asarray([True, False, True, True, True])
    result = jax.vmap(lambda o, k, t: tdmpc2_plan(state.model, state.policy, o, alpha=0.3, trade=t, config=plan,
                                                  key=k))(obs, keys, trade)
    assert result.action.shape == (5, 2) and result.mean.shape == (5, 3, 2) and result.next_mean.shape == (5, 3, 2)
    assert result.planned_return.shape == (5,) and bool(jnp.all(jnp.isfinite(result.planned_return)))
    assert bool(jnp.all((result.mean >= -0.5) & (result.mean <= 0.8)))
    assert bool(jnp.all((result.action >= -0.5) & (result.action <= 0.8)))
    np.testing.assert_array_equal(np.asarray(result.action[1]), 0.0)
    np.testing.assert_allclose(np.asarray(result.mean[1]), np.asarray(result.mean[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(result.action[0]), np.asarray(result.mean[0, 0]), rtol=1e-6)
    with pytest.raises(ValueError, match="discount"):
        tdmpc2_plan(state.model, state.policy, obs[0], alpha=0.3, config=plan.replace(discount=0.5), key=key)
    with pytest.raises(ValueError, match="action_low, action_high"):
        tdmpc2_plan(state.model, state.policy, obs[0], alpha=0.3, config=plan.replace(action_high=2.0), key=key)


@pytest.mark.slow
def test_training_lowers_consistency_and_reward_losses(key):
    # 120 updates on random-forcing Lorenz episodes; both losses are compared on held-out
    # windows (other starts) before and after, from the same state
    config = TDMPC2Config(obs_dim=3, action_dim=3, latent_dim=16, simnorm_dim=4, hidden=32, num_q=2,
                          num_quantiles=8, learning_rate=1e-3)
    env = LorenzControlConfig()
    plan = MPPIConfig(action_dim=3, horizon=3, num_samples=8, num_elites=2, iterations=1, discount=config.discount)
    train_key, held_key, loss_key = jax.random.split(key, 3)
    held = run_tdmpc2_episodes(None, env, plan, jax.random.split(held_key, 2), steps=60, obs_scale=10.0, alpha=0.5,
                               key=held_key)
    batch = episode_windows(held, config.horizon, reward_scale=0.1)
    train = TDMPC2TrainConfig(rounds=1, seed_rounds=1, episodes_per_round=4, episode_steps=60, updates_per_round=120,
                              batch_size=32)
    state, history = train_tdmpc2_lorenz(config, plan, train, env, key=train_key)
    fresh = tdmpc2_init(config, key=train_key)
    before = tdmpc2_world_model_loss(fresh.model, fresh.target_critics, fresh.policy, batch, 0.5, key=loss_key)[1]
    after = tdmpc2_world_model_loss(state.model, state.target_critics, state.policy, batch, 0.5, key=loss_key)[1]
    assert float(after["reward"]) < 0.5 * float(before["reward"])
    assert float(after["consistency"]) < float(before["consistency"])
    assert int(state.step) == 120 and len(history) == 1
    # one more update from the trained state stays finite
    _, metrics = tdmpc2_update(state, jax.tree_util.tree_map(lambda x: x[:8], batch), 0.5, key=loss_key)
    assert all(bool(jnp.isfinite(v)) for v in metrics.values())


def test_frozen_encoder_passes_the_embedding_through(key):
    # encoder="frozen": the observation (a pretrained embedding) is the latent, with no gradient
    # into it and no SimNorm on the dynamics' output
    config = TDMPC2Config(obs_dim=8, action_dim=2, latent_dim=8, encoder="frozen", hidden=16, num_q=2,
                          num_quantiles=4)
    model = TDMPC2WorldModel(config, key=key)
    embedding = jnp.asarray(RNG.normal(size=8), jnp.float32)
    np.testing.assert_array_equal(np.asarray(model.encode(embedding)), np.asarray(embedding))
    assert float(jnp.abs(jax.grad(lambda o: jnp.sum(model.encode(o) ** 2))(embedding)).max()) == 0.0
    out = model.next(embedding, jnp.zeros(2))
    raw = model.dynamics(jnp.concatenate([embedding, jnp.zeros(2)]))
    np.testing.assert_allclose(np.asarray(out), np.asarray(raw), rtol=1e-6)
    assert eqx.filter(model.encoder, eqx.is_array) is not None and not jax.tree_util.tree_leaves(
        eqx.filter(model.encoder, eqx.is_array))
