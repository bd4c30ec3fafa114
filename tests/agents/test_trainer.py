"""Training the cross-sectional agent: it learns a perfect signal (its fresh calendar book beats
equal weight) and not noise, its episodes stay inside their rows, and a tiny run on the built-in
cross-section of stocks gives finite numbers. The evaluation itself: test_evaluation.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.agents import (
    AgentTrainConfig,
    EnvConfig,
    MarketPanel,
    QRDQNConfig,
    evaluate_agent,
    market_panel,
    train_agent,
)
from chaosfm.data import load

ROWS, ASSETS, HOLDING = 400, 12, 2
FIRST, FENCE, EMBARGO = 20, 299, 5
CONFIG = AgentTrainConfig(
    env=EnvConfig(n_assets=4, holding=HOLDING, episode_rebalances=8),
    qrdqn=QRDQNConfig(obs_dim=4, n_actions=3, n_quantiles=8, hidden=16, layers=1, gamma=0.5, learning_rate=3e-3,
                      batch_size=128, buffer_size=4096, epsilon_steps=100, target_update_every=20),
    portfolios=8, iterations=60, updates_per_iteration=4, momentum_feature=1,
)


def _panel(informative: bool, seed: int = 0) -> MarketPanel:
    """Zero-drift random returns and three noise features; if ``informative``, feature 0 at row ``t``
    is the sign of each asset's compounded return over rows ``t+1 .. t+HOLDING``."""
    rng = np.random.default_rng(seed)
    returns = 0.01 * rng.standard_normal((ROWS, ASSETS))
    growth = np.ones((ROWS, ASSETS))
    for lag in range(1, HOLDING + 1):
        growth[:-HOLDING] *= 1.0 + returns[lag:ROWS - HOLDING + lag]
    features = rng.standard_normal((ROWS, ASSETS, 3))
    if informative:
        features[:, :, 0] = np.where(growth > 1.0, 1.0, -1.0)
        features[-HOLDING:, :, 0] = 0.0  # the future is not in the panel
    return MarketPanel(jnp.asarray(returns, jnp.float32), jnp.ones((ROWS, ASSETS), bool),
                       jnp.asarray(features, jnp.float32))


@pytest.fixture(scope="module")
def trained():
    panel = _panel(informative=True)
    seen = []
    agent, history = train_agent(panel, CONFIG, first=FIRST, last=FENCE, key=jax.random.key(0),
                                 on_iteration=lambda index, entry: seen.append((index, entry)))
    return panel, agent, history, seen


def test_learns_a_perfect_signal(trained):
    panel, agent, history, seen = trained
    assert set(history) == {"loss", "return", "epsilon", "first_row", "last_row"}
    assert all(values.shape == (CONFIG.iterations,) for values in history.values())
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-10:].mean() < history["loss"][:5].mean()
    assert [index for index, _ in seen] == list(range(CONFIG.iterations))
    assert seen[-1][1]["loss"] == pytest.approx(float(history["loss"][-1]))
    # Every training episode touched only rows inside [FIRST, FENCE].
    assert history["first_row"].min() >= FIRST and history["last_row"].max() <= FENCE
    assert history["first_row"].min() < FIRST + 20 and history["last_row"].max() > FENCE - 20  # they roam

    result = evaluate_agent(panel, agent.params, CONFIG, first=FENCE + EMBARGO, last=ROWS - 1,
                            key=jax.random.key(1), n_portfolios=64)
    agent_stats, equal = result["agent"], result["equal_weight"]
    total = (ROWS - 1 - FENCE - EMBARGO) // HOLDING  # one dated return per rebalance of the fresh calendar
    assert len(agent_stats["pnl"]) == total and agent_stats["portfolio_returns"].shape == (64, total)
    assert agent_stats["mean_return"] > 0.005  # a book of sure bets: about 1% per hold
    assert agent_stats["mean_return"] > equal["mean_return"] + 0.005
    assert agent_stats["sharpe_ci"][0] > 0 and agent_stats["hit_rate"] > 0.9
    assert 0 <= agent_stats["non_flat_fraction"] <= 1 and agent_stats["turnover"] > 0


def test_noise_is_not_learned(key):
    panel = _panel(informative=False)
    agent, history = train_agent(panel, CONFIG, first=FIRST, last=FENCE, key=key)
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["return"]))
    result = evaluate_agent(panel, agent.params, CONFIG, first=FENCE + EMBARGO, last=ROWS - 1,
                            key=jax.random.key(1), n_portfolios=64)
    assert np.all(np.isfinite(result["agent"]["portfolio_returns"]))
    assert result["agent"]["psr"] < 0.95  # nothing to find: not significantly positive
    assert abs(result["agent"]["mean_return"]) < 0.002


def test_rejects_what_cannot_run(key):
    panel = _panel(informative=True)
    with pytest.raises(ValueError, match="obs_dim"):
        train_agent(panel, CONFIG.replace(qrdqn=CONFIG.qrdqn.replace(obs_dim=3)), first=0, last=FENCE, key=key)
    with pytest.raises(ValueError, match="no episode"):
        train_agent(panel, CONFIG, first=0, last=10, key=key)
    with pytest.raises(ValueError, match="portfolios.*temperature"):
        AgentTrainConfig(portfolios=0, temperature=0.0)
    with pytest.raises(ValueError, match="n_actions"):
        AgentTrainConfig(qrdqn=QRDQNConfig(obs_dim=5, n_actions=1))


@pytest.mark.slow
def test_a_tiny_run_on_sp500_stocks(key):
    frame = load("sp500_stocks")
    stamps = np.sort(frame["timestamp"].unique())
    fence = int(0.8 * len(stamps))
    panel, _, _ = market_panel(frame, fit_end=stamps[fence])
    config = AgentTrainConfig(
        env=EnvConfig(n_assets=8, holding=5, episode_rebalances=12, cost_bps=2.0),
        qrdqn=QRDQNConfig(obs_dim=5, n_actions=3, n_quantiles=16, hidden=32, layers=1, gamma=0.5,
                          batch_size=128, buffer_size=8192, epsilon_steps=50),
        portfolios=16, iterations=20, updates_per_iteration=4,
    )
    train_key, eval_key = jax.random.split(key)
    agent, history = train_agent(panel, config, first=0, last=fence, key=train_key)
    assert history["last_row"].max() <= fence and np.all(np.isfinite(history["loss"]))
    result = evaluate_agent(panel, agent.params, config, first=fence + 5, last=len(stamps) - 1, key=eval_key,
                            n_portfolios=32, stamps=stamps)
    total = (len(stamps) - 1 - fence - 5) // 5
    assert result["rows"][0] == fence + 5 and len(result["rows"]) == total
    for name in ("agent", "equal_weight", "momentum"):
        stats = result[name]
        assert np.all(np.isfinite(stats["portfolio_returns"])) and stats["portfolio_returns"].shape == (32, total)
        assert stats["pnl"]["timestamp"].iloc[0] > stamps[fence + 5]
        assert all(math.isfinite(stats[field]) for field in ("mean_return", "sharpe", "sharpe_se", "psr"))
