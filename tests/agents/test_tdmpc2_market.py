"""The market TD-MPC2 agent: per-asset shapes, the book is the soft allocation of the policy's
scores, the convergence map, training that never reads a row after the fence, MPPI levels in the
latent space against a reward head of known optimum, and the evaluation's per-decision telemetry
against the alpha map and the rewards recomputed by hand."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.agents import (
    ACTORS,
    AgentTrainConfig,
    EnvConfig,
    MarketPanel,
    MarketTDMPC2Agent,
    MarketTDMPC2Config,
    env_reset,
    evaluate_tdmpc2_market,
    market_tdmpc2_agent,
    soft_allocation,
    train_tdmpc2_market,
)
from chaosfm.agents._tdmpc2_market import _episode, _risk
from chaosfm.evaluate import trade_cost

ROWS, ASSETS, FEATURES, HOLDING, FENCE = 200, 6, 4, 2, 139
BOOK = AgentTrainConfig(env=EnvConfig(n_assets=4, holding=HOLDING, episode_rebalances=4, cost_bps=2.0), portfolios=4,
                        temperature=0.5)
TINY = {"iterations": 3, "updates_per_iteration": 2, "batch_size": 16, "buffer_size": 512, "hidden": 8,
        "latent_dim": 8, "hidden_layers": 1, "num_q": 2, "num_quantiles": 4, "horizon": 2}
# The trained fixture acts by the policy prior (a small program to compile); MPPI is tested on its own
# below and end to end in tests/jobs/test_agent.py.
CONFIG = MarketTDMPC2Config.from_fields(BOOK, FEATURES + 1, {**TINY, "actor": "policy"})


def _panel(seed: int, after_fence_seed: int | None = None) -> MarketPanel:
    rng = np.random.default_rng(seed)
    returns = 0.01 * rng.standard_normal((ROWS, ASSETS))
    features = rng.standard_normal((ROWS, ASSETS, FEATURES))
    if after_fence_seed is not None:  # other rows after the fence only
        other = np.random.default_rng(after_fence_seed)
        returns[FENCE + 1:] = 0.05 * other.standard_normal((ROWS - FENCE - 1, ASSETS))
        features[FENCE + 1:] = other.standard_normal((ROWS - FENCE - 1, ASSETS, FEATURES))
    return MarketPanel(jnp.asarray(returns, jnp.float32), jnp.ones((ROWS, ASSETS), bool),
                       jnp.asarray(features, jnp.float32))


def _convergence() -> np.ndarray:
    values = np.random.default_rng(3).uniform(size=(ROWS, ASSETS))
    values[:, 0] = np.nan  # asset 0's convergence is never known: never traded
    return values


@pytest.fixture(scope="module")
def trained():
    seen = []
    state, history = train_tdmpc2_market(_panel(0), CONFIG, first=0, last=FENCE, key=jax.random.key(0),
                                         convergence=_convergence(), on_iteration=lambda i, e: seen.append(i))
    return MarketTDMPC2Agent(state.model, state.policy), history, seen


def test_per_asset_shapes_of_an_episode_and_of_the_agent():
    agent = market_tdmpc2_agent(CONFIG.model, key=jax.random.key(1))
    panel = _panel(0)
    state = env_reset(panel, BOOK.env, key=jax.random.key(2), first=0, last=FENCE)
    obs = jnp.concatenate([panel.features[state.t, state.assets], jnp.zeros((4, 1))], axis=-1)
    scores = agent.scores(obs, jnp.full((4,), CONFIG.alpha))
    assert scores.shape == (4,) and bool(jnp.all(jnp.abs(scores) <= 1))
    windows, alphas, record = _episode(agent, panel, None, CONFIG, jax.random.key(3), jnp.asarray(0),
                                       jnp.asarray(FENCE), jnp.asarray(False))
    # K = 4 assets, S = 4 rebalances, H = 2: W = 3 windows per asset, each one asset's sub-trajectory.
    assert windows.obs.shape == (12, 3, FEATURES + 1) and windows.action.shape == (12, 2, 1)
    assert windows.reward.shape == (12, 2) and alphas.shape == (12,) and bool(jnp.all(alphas == CONFIG.alpha))
    assert record["return"].shape == (4,)
    # The observation's last column is the asset's level: flat at the start, then the action taken.
    first_asset = windows.obs[:3]  # the first asset's three windows, in order
    assert float(first_asset[0, 0, -1]) == 0.0
    np.testing.assert_array_equal(first_asset[0, 1:, -1], windows.action[0, :, 0])


def test_the_convergence_sets_alpha_and_the_no_trade_flag_unless_fixed():
    panel = _panel(0)
    state = env_reset(panel, BOOK.env, key=jax.random.key(0), first=0, last=FENCE)
    state = state._replace(assets=jnp.arange(4, dtype=jnp.int32))
    convergence = np.zeros((ROWS, ASSETS))
    convergence[int(state.t), :4] = [np.nan, 0.1, 0.55, 0.9]
    model = CONFIG.model
    alpha, trade = _risk(CONFIG, jnp.asarray(convergence), state)
    middle = model.alpha_min + (model.alpha_max - model.alpha_min) * (0.55 - 0.3) / 0.5
    np.testing.assert_allclose(alpha, [model.alpha_min, model.alpha_min, middle, model.alpha_max], rtol=1e-6)
    assert trade.tolist() == [False, False, True, True]
    alpha, trade = _risk(CONFIG.replace(fixed_alpha=True), jnp.asarray(convergence), state)
    assert alpha.tolist() == [CONFIG.alpha] * 4 and trade.tolist() == [True] * 4


def test_training_records_its_history_and_the_dynamic_alpha(trained):
    _, history, seen = trained
    assert seen == [0, 1, 2]
    assert set(history) == {"loss", "td", "policy", "return", "alpha", "traded", "first_row", "last_row"}
    assert all(len(v) == 3 for v in history.values()) and np.all(np.isfinite(history["loss"]))
    assert np.all(history["last_row"] <= FENCE)
    # Asset 0 (of 6) has no convergence: about a third of the rest are below no_trade = 0.2 or unknown.
    assert np.all(history["traded"] < 1) and np.all(history["traded"] > 0)
    assert np.all((history["alpha"] >= CONFIG.model.alpha_min) & (history["alpha"] <= CONFIG.model.alpha_max))


def test_no_row_after_the_fence_enters_training(trained):
    agent, _, _ = trained
    state, _ = train_tdmpc2_market(_panel(0, after_fence_seed=9), CONFIG, first=0, last=FENCE,
                                   key=jax.random.key(0), convergence=_convergence())
    other = MarketTDMPC2Agent(state.model, state.policy)
    leaves = jax.tree_util.tree_leaves(eqx.filter(agent, eqx.is_array))
    assert all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree_util.tree_leaves(eqx.filter(other, eqx.is_array))))


def test_the_book_is_the_soft_allocation_of_the_policys_scores(trained):
    agent, _, _ = trained
    panel = _panel(0)
    fixed = CONFIG.replace(fixed_alpha=True)  # every asset traded: the allocation over all K
    result = evaluate_tdmpc2_market(panel, agent, fixed, first=FENCE + 1, last=ROWS - 1, key=jax.random.key(5),
                                    n_portfolios=2)
    row, assets = int(result["rows"][0]), np.asarray(result["assets"][0, 0])
    obs = jnp.concatenate([panel.features[row, assets], jnp.zeros((4, 1))], axis=-1)  # flat at the first rebalance
    weights = soft_allocation(agent.scores(obs, jnp.full((4,), CONFIG.alpha)), temperature=0.5, net_exposure=0.0,
                              gross_leverage=1.0)
    growth = np.prod(1 + np.asarray(panel.returns)[row + 1:row + 1 + HOLDING][:, assets], axis=0)
    expected = float(np.dot(weights, growth - 1) - np.sum(trade_cost(weights, 2.0, 0.0)))
    assert result["agent"]["portfolio_returns"][0, 0] == pytest.approx(expected, rel=1e-5, abs=1e-8)
    assert result["agent"]["non_flat_fraction"] == 1.0 and result["agent"]["traded_fraction"] == 1.0
    assert set(result) == {"agent", "equal_weight", "momentum", "rows", "assets", "periods_per_year", "telemetry"}
    gated = evaluate_tdmpc2_market(panel, agent, CONFIG, first=FENCE + 1, last=ROWS - 1, key=jax.random.key(5),
                                   n_portfolios=2, convergence=_convergence())
    assert 0 < gated["agent"]["traded_fraction"] < 1  # asset 0 and the low-convergence assets sit out
    np.testing.assert_array_equal(gated["equal_weight"]["portfolio_returns"],
                                  result["equal_weight"]["portfolio_returns"])


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['latent'\]"):
        MarketTDMPC2Config.from_fields(BOOK, 5, {"latent": 8})
    with pytest.raises(ValueError, match="action_dim: must be 1"):
        dataclasses.replace(CONFIG, model=CONFIG.model.replace(action_dim=2))
    with pytest.raises(ValueError, match="horizon: must be <= env.episode_rebalances"):
        MarketTDMPC2Config.from_fields(BOOK, 5, {"horizon": 5})
    with pytest.raises(ValueError, match="alpha: must lie in"):
        MarketTDMPC2Config.from_fields(BOOK, 5, {"alpha": 0.0})
    with pytest.raises(ValueError, match=r"actor: must be one of \['mppi', 'policy'\]"):
        MarketTDMPC2Config.from_fields(BOOK, 5, {"actor": "cem"})
    with pytest.raises(ValueError, match="the planner .*num_elites: must be <= num_samples"):
        MarketTDMPC2Config.from_fields(BOOK, 5, {"plan_samples": 4, "plan_elites": 8})
    with pytest.raises(ValueError, match="obs_dim must be the panel's features"):
        train_tdmpc2_market(_panel(0), MarketTDMPC2Config.from_fields(BOOK, 7, TINY), first=0, last=FENCE,
                            key=jax.random.key(0))


class _KnownReward(eqx.Module):
    """A reward head ``R(z, a) = -(a - target)^2``: its best level is ``target`` whatever the latent."""

    target: jax.Array

    def __call__(self, joint):
        return jnp.reshape(-((joint[-1] - self.target) ** 2), (1,))


def _known_reward_agent(target: float) -> MarketTDMPC2Agent:
    agent = market_tdmpc2_agent(CONFIG.model, key=jax.random.key(11))
    head = agent.model.critics.head  # zero critics: the terminal value is 0, the rewards decide
    model = eqx.tree_at(lambda m: (m.reward_head, m.critics.head.weight, m.critics.head.bias), agent.model,
                        (_KnownReward(jnp.asarray(target, jnp.float32)), jnp.zeros_like(head.weight),
                         jnp.zeros_like(head.bias)))
    return MarketTDMPC2Agent(model, agent.policy)


PLANNING = CONFIG.replace(actor="mppi", plan_iterations=4, plan_samples=64, plan_elites=8, plan_policy_samples=4)


@eqx.filter_jit
def _levels(agent, obs, alpha, keys):  # (B, K, O), (B, K), (B, K) keys: batched over portfolios
    planned = jax.vmap(lambda o, a, k: ACTORS["mppi"](agent, o, a, PLANNING, k))(obs, alpha, keys)
    prior = jax.vmap(lambda o, a, k: ACTORS["policy"](agent, o, a, PLANNING, k))(obs, alpha, keys)
    return planned, prior


@pytest.mark.parametrize("target", [0.6, -0.45, 1.7])
def test_mppi_levels_stay_in_bounds_and_find_the_known_optimum_better_than_the_prior(target):
    agent = _known_reward_agent(target)
    obs = jnp.asarray(np.random.default_rng(4).standard_normal((3, 4, FEATURES + 1)), jnp.float32)  # (B, K, O)
    alpha = jnp.asarray([[0.1, 0.5, 1.0, 0.3]] * 3, jnp.float32)
    keys = jax.random.split(jax.random.key(2), (3, 4))
    planned, prior = (np.asarray(x) for x in _levels(agent, obs, alpha, keys))
    assert planned.shape == (3, 4) and np.all(np.abs(planned) <= 1.0)
    best = float(np.clip(target, -1.0, 1.0))  # the best level the bounds allow
    assert np.max(np.abs(planned - best)) < 0.1
    assert np.mean(np.abs(planned - best)) < 0.5 * np.mean(np.abs(prior - best))
    # The policy actor is the prior's deterministic level, at each asset's alpha.
    np.testing.assert_array_equal(prior, np.asarray(jax.vmap(agent.scores)(obs, alpha)))


def test_the_telemetry_records_every_decision_its_alpha_and_its_realised_reward(trained):
    agent, _, _ = trained
    panel, convergence = _panel(0), _convergence()
    result = evaluate_tdmpc2_market(panel, agent, CONFIG, first=FENCE + 1, last=ROWS - 1, key=jax.random.key(5),
                                    n_portfolios=3, convergence=convergence)
    telemetry = result["telemetry"]
    rebalances = len(result["rows"])
    assert all(len(v) == rebalances * 3 * 4 for v in telemetry.values())  # one per (rebalance, portfolio, asset)
    rows, assets = telemetry["row"], telemetry["asset"]
    assert np.all(np.diff(rows) >= 0) and set(rows) == set(result["rows"])
    # The alpha map by hand on the convergence at each decision's (row, asset); unknown -> alpha_min, flat.
    model = CONFIG.model
    score = convergence[rows, assets]
    expected = model.alpha_min + (model.alpha_max - model.alpha_min) * np.clip(
        (score - model.convergence_low) / (model.convergence_high - model.convergence_low), 0, 1)
    expected = np.where(np.isfinite(score), expected, model.alpha_min)
    np.testing.assert_allclose(telemetry["alpha"], expected, rtol=1e-6)
    traded = np.isfinite(score) & (score >= model.no_trade)
    np.testing.assert_array_equal(telemetry["traded"], traded)
    assert np.all(telemetry["action"][~traded] == 0) and np.all(telemetry["weight"][~traded] == 0)
    np.testing.assert_array_equal(telemetry["action"][traded], telemetry["prior_action"][traded])  # actor: policy
    # The realised reward by hand: the level times the asset's hold return minus the cost of the move
    # from the previous level of the same portfolio and asset (flat at an episode's first rebalance).
    returns = np.asarray(panel.returns, np.float64)
    hold = np.prod(1 + returns[rows[:, None] + 1 + np.arange(HOLDING), assets[:, None]], axis=1) - 1
    level = telemetry["action"].astype(np.float64)
    previous = np.zeros_like(level)
    episode_start = {int(t) for t in FENCE + 1 + np.arange(0, rebalances, BOOK.env.episode_rebalances) * HOLDING}
    last_level = {}
    for i, (t, p, a) in enumerate(zip(rows, telemetry["portfolio"], assets)):
        previous[i] = 0.0 if int(t) in episode_start else last_level.get((p, a), 0.0)
        last_level[(p, a)] = level[i]
    cost = 2.0 / 1e4 * np.abs(level - previous)  # cost_bps 2, impact 0: per unit of capital moved
    np.testing.assert_allclose(telemetry["reward"], 100 * (level * hold - cost), rtol=1e-4, atol=1e-5)
    # The portfolio's gross exposure and return sit on each of its rows.
    gross = np.abs(telemetry["weight"]).reshape(-1, 4).sum(axis=1)
    np.testing.assert_allclose(telemetry["gross_exposure"].reshape(-1, 4)[:, 0], gross, rtol=1e-5)
    np.testing.assert_allclose(telemetry["portfolio_return"].reshape(rebalances, 3, 4)[..., 0],
                               result["agent"]["portfolio_returns"].T, rtol=1e-6)
