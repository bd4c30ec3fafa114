"""Calendar evaluation of the agent: one shared calendar and asset draw for every book, the
equal-weight book against a plain numpy simulation, the dated P&L and its Sharpe figures the
evaluator's, and the Multiverse Crossing gate (nothing gated, everything gated, one asset gated
worked by hand, the threshold chosen on training rows only)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm.agents import (
    AgentTrainConfig,
    EnvConfig,
    MarketPanel,
    QRDQNConfig,
    env_reset_at,
    evaluate_agent,
    evaluate_gate,
    qrdqn_init,
)
from chaosfm.evaluate import (
    probabilistic_sharpe_ratio,
    sharpe_confidence_interval,
    sharpe_ratio,
    sharpe_standard_error,
)

ROWS, ASSETS, HOLDING, EPISODE = 200, 6, 3, 4
FIRST, LAST, TRAIN_FIRST, FENCE = 100, ROWS - 1, 20, 95
P = 8
CONFIG = AgentTrainConfig(
    env=EnvConfig(n_assets=4, holding=HOLDING, episode_rebalances=EPISODE, cost_bps=10.0, impact=0.01),
    qrdqn=QRDQNConfig(obs_dim=4, n_actions=3, n_quantiles=8, hidden=16, layers=1),
    momentum_feature=1,
)
STAMPS = pd.bdate_range("2010-01-04", periods=ROWS).to_numpy()


def _panel(seed: int = 0) -> MarketPanel:
    """Random returns and features; asset 5 has no data on rows 150-159."""
    rng = np.random.default_rng(seed)
    valid = np.ones((ROWS, ASSETS), bool)
    valid[150:160, 5] = False
    returns = np.where(valid, 0.01 * rng.standard_normal((ROWS, ASSETS)), 0.0)
    features = np.where(valid[..., None], rng.standard_normal((ROWS, ASSETS, 3)), 0.0)
    return MarketPanel(jnp.asarray(returns, jnp.float32), jnp.asarray(valid), jnp.asarray(features, jnp.float32))


@pytest.fixture(scope="module")
def evaluated():
    panel = _panel()
    params = qrdqn_init(CONFIG.qrdqn, key=jax.random.key(3)).params
    result = evaluate_agent(panel, params, CONFIG, first=FIRST, last=LAST, key=jax.random.key(1), n_portfolios=P,
                            stamps=STAMPS)
    return panel, params, result


def _equal_weight(panel: MarketPanel, env: EnvConfig, assets: np.ndarray, start: int, length: int) -> list[float]:
    """Net returns of an equal-weight episode, plainly: trade to 1/K, buy and hold, close out at the end."""
    returns = np.asarray(panel.returns, np.float64)
    weights, out = np.zeros(len(assets)), []

    def cost(trade):
        return float(np.sum(env.cost_bps / 1e4 * np.abs(trade) + env.impact * trade**2))

    for i in range(length):
        t = start + i * env.holding
        target = np.full(len(assets), 1.0 / len(assets))
        paid = cost(target - weights)
        growth = np.prod(1.0 + returns[t + 1:t + env.holding + 1][:, assets], axis=0)
        net = float(target @ (growth - 1.0)) - paid
        weights = target * growth / (1.0 + net)
        if i == length - 1:
            net -= cost(weights) * (1.0 + net)
        out.append(net)
    return out


def test_every_book_trades_one_calendar_on_the_same_assets(evaluated):
    panel, _, result = evaluated
    total = (LAST - FIRST) // HOLDING  # 33 rebalances: 8 episodes of 4 and a last one of 1
    np.testing.assert_array_equal(result["rows"], FIRST + HOLDING * np.arange(total))
    starts = FIRST + HOLDING * EPISODE * np.arange(9)
    lengths = [EPISODE] * 8 + [1]
    assert result["assets"].shape == (P, 9, 4)
    keys = jax.random.split(jax.random.key(1), (P, 9))
    valid = np.asarray(panel.valid)
    for p in range(P):
        for g, (start, length) in enumerate(zip(starts, lengths)):
            drawn = result["assets"][p, g]
            reference = env_reset_at(panel, CONFIG.env, int(start), key=keys[p, g], rebalances=length)
            np.testing.assert_array_equal(drawn, np.asarray(reference.assets))
            assert len(set(drawn.tolist())) == 4 and valid[start:start + length * HOLDING + 1][:, drawn].all()
    for name in ("agent", "equal_weight", "momentum"):
        pnl = result[name]["pnl"]
        assert list(pnl.columns) == ["timestamp", "net", "gross", "turnover", "cost"] and len(pnl) == total
        assert pd.api.types.is_datetime64_any_dtype(pnl["timestamp"])
        np.testing.assert_array_equal(pnl["timestamp"].to_numpy(), STAMPS[result["rows"] + HOLDING])
        assert result[name]["portfolio_returns"].shape == (P, total)


def test_the_equal_weight_book_against_a_plain_simulation(evaluated):
    panel, _, result = evaluated
    starts = FIRST + HOLDING * EPISODE * np.arange(9)
    lengths = [EPISODE] * 8 + [1]
    for p in range(P):
        expected = np.concatenate([_equal_weight(panel, CONFIG.env, result["assets"][p, g], int(start), length)
                                   for g, (start, length) in enumerate(zip(starts, lengths))])
        np.testing.assert_allclose(result["equal_weight"]["portfolio_returns"][p], expected, rtol=1e-4, atol=1e-6)


def test_the_dated_fund_and_its_statistics_are_the_evaluators(evaluated):
    panel, params, result = evaluated
    periods = 252.0 / HOLDING
    assert result["periods_per_year"] == periods
    for name in ("agent", "equal_weight", "momentum"):
        stats = result[name]
        net = stats["pnl"]["net"].to_numpy()
        np.testing.assert_allclose(net, stats["portfolio_returns"].mean(axis=0))
        np.testing.assert_allclose(stats["pnl"]["gross"] - stats["pnl"]["cost"], net, atol=1e-12)
        assert stats["days"] == len(net) and stats["hit_rate"] == pytest.approx(np.mean(net > 0))
        assert stats["sharpe"] == pytest.approx(sharpe_ratio(net, periods))
        # One return per date: the standard error is over S dates, not P * S pooled returns.
        assert stats["sharpe_se"] == pytest.approx(sharpe_standard_error(net) * math.sqrt(periods))
        low, high = sharpe_confidence_interval(net, 0.95)
        assert stats["sharpe_ci"] == pytest.approx([low * math.sqrt(periods), high * math.sqrt(periods)])
        assert stats["psr"] == pytest.approx(probabilistic_sharpe_ratio(net))
        equity = np.cumprod(np.concatenate([[1.0], 1.0 + net]))  # from 1: a first loss is a drawdown
        assert stats["max_drawdown"] == pytest.approx(np.min(equity / np.maximum.accumulate(equity) - 1))
    assert 0 <= result["agent"]["non_flat_fraction"] <= 1
    again = evaluate_agent(panel, params, CONFIG, first=FIRST, last=LAST, key=jax.random.key(1), n_portfolios=P,
                           stamps=STAMPS)
    for name in ("agent", "equal_weight", "momentum"):
        pd.testing.assert_frame_equal(result[name]["pnl"], again[name]["pnl"])


def _gate(panel, params, convergence, thresholds, **overrides):
    arguments = dict(first=FIRST, last=LAST, train_first=TRAIN_FIRST, train_last=FENCE, key=jax.random.key(1),
                     n_portfolios=P, stamps=STAMPS)
    return evaluate_gate(panel, params, CONFIG, convergence=convergence, thresholds=thresholds,
                         **(arguments | overrides))


def test_a_gate_that_passes_everything_is_the_ungated_agent_and_one_that_passes_nothing_is_flat(evaluated):
    panel, params, result = evaluated
    everything = np.full((ROWS, ASSETS), np.inf)
    nothing = np.full((ROWS, ASSETS), -np.inf)
    nothing[::2] = np.nan  # unknown is not traded either
    sweep = _gate(panel, params, everything, [0.3])
    fresh = sweep["thresholds"][0]["fresh"]
    pd.testing.assert_frame_equal(fresh["pnl"], result["agent"]["pnl"])  # exactly
    assert fresh["traded_fraction"] == 1.0 and fresh["active_fraction"] == 1.0
    assert sweep["chosen_threshold"] == 0.3 and sweep["thresholds"][0]["chosen"]
    flat = _gate(panel, params, nothing, [0.3])
    assert flat["chosen_threshold"] is None and not flat["thresholds"][0]["chosen"]
    for period in ("train", "fresh"):
        entry = flat["thresholds"][0][period]
        assert np.all(entry["pnl"][["net", "turnover", "cost"]].to_numpy() == 0.0)
        assert entry["traded_fraction"] == 0.0 and entry["active_fraction"] == 0.0 and entry["sharpe"] is None


def test_the_threshold_is_chosen_on_training_rows_only(evaluated):
    panel, params, _ = evaluated
    rng = np.random.default_rng(5)
    convergence = rng.uniform(size=(ROWS, ASSETS))
    thresholds = [0.0, 0.4, 0.8, 2.0]  # 2.0 trades nothing: no Sharpe ratio, never chosen
    sweep = _gate(panel, params, convergence, thresholds)
    entries = sweep["thresholds"]
    assert [e["threshold"] for e in entries] == thresholds
    train = [e["train"]["sharpe"] for e in entries]
    assert train[-1] is None
    best = int(np.argmax(train[:-1]))
    assert sweep["chosen_threshold"] == thresholds[best] and [e["chosen"] for e in entries] == [
        i == best for i in range(4)]
    assert all(e["train"]["pnl"]["timestamp"].max() <= STAMPS[FENCE] for e in entries)
    assert all(e["fresh"]["pnl"]["timestamp"].min() > STAMPS[FENCE] for e in entries)
    fractions = [e["fresh"]["traded_fraction"] for e in entries]
    assert fractions[0] == 1.0 and fractions[0] > fractions[1] > fractions[2] > fractions[3] == 0.0
    # What the score says after the fence changes the fresh results, never the choice.
    moved = convergence.copy()
    moved[FENCE + 1:] = rng.uniform(size=(ROWS - FENCE - 1, ASSETS))
    again = _gate(panel, params, moved, thresholds)
    assert again["chosen_threshold"] == sweep["chosen_threshold"]
    assert [e["train"]["sharpe"] for e in again["thresholds"]] == train
    assert again["thresholds"][1]["fresh"]["sharpe"] != entries[1]["fresh"]["sharpe"]


def test_gating_one_asset_by_hand():
    """Three assets, all held by each portfolio; a critic of zeros scores them equally, so the long
    book holds 1/3 each, or 1/2 each of the two left when one is gated. No costs."""
    rows = 12
    per_row = np.array([0.01, 0.0, -0.02])
    panel = MarketPanel(jnp.asarray(np.tile(per_row, (rows, 1)), jnp.float32), jnp.ones((rows, 3), bool),
                        jnp.asarray(np.random.default_rng(0).standard_normal((rows, 3, 3)), jnp.float32))
    config = CONFIG.replace(env=EnvConfig(n_assets=3, holding=2, episode_rebalances=2, cost_bps=0.0,
                                          net_exposure=1.0, gross_leverage=1.0))
    params = jax.tree_util.tree_map(jnp.zeros_like, qrdqn_init(config.qrdqn, key=jax.random.key(0)).params)
    convergence = np.ones((rows, 3))
    convergence[4, 2] = 0.1  # the third asset is gated at the rebalance of row 4 (the hold of rows 5-6)
    sweep = evaluate_gate(panel, params, config, convergence=convergence, thresholds=[0.5], first=2, last=10,
                          train_first=2, train_last=10, key=jax.random.key(1), n_portfolios=2)
    ungated = evaluate_agent(panel, params, config, first=2, last=10, key=jax.random.key(1), n_portfolios=2)
    held = (1.0 + per_row) ** 2 - 1.0  # 0.0201, 0, -0.0396 over a hold of two rows
    assert held.mean() == pytest.approx(-0.0065)
    np.testing.assert_allclose(ungated["agent"]["pnl"]["net"], [-0.0065] * 4, rtol=1e-5)
    gated = sweep["thresholds"][0]["fresh"]
    np.testing.assert_allclose(gated["pnl"]["net"] - ungated["agent"]["pnl"]["net"], [0, 0.01655, 0, 0],
                               atol=1e-7)  # (0.0201 + 0) / 2 - (-0.0065)
    assert gated["traded_fraction"] == pytest.approx(11 / 12) and gated["active_fraction"] == 1.0


def test_rejects_what_cannot_run(evaluated):
    panel, params, _ = evaluated
    with pytest.raises(ValueError, match="n_portfolios"):
        evaluate_agent(panel, params, CONFIG, first=FIRST, last=LAST, key=jax.random.key(0), n_portfolios=0)
    with pytest.raises(ValueError, match=r"rows \[190, 192\].*no rebalance"):
        evaluate_agent(panel, params, CONFIG, first=190, last=192, key=jax.random.key(0), n_portfolios=1)
    narrow = CONFIG.replace(env=CONFIG.env.replace(n_assets=6))  # asset 5 is missing on rows 150-159
    with pytest.raises(ValueError, match=r"rows \[148, 160\].*5 assets valid.*n_assets = 6"):
        evaluate_agent(panel, params, narrow, first=100, last=LAST, key=jax.random.key(0), n_portfolios=1)
    with pytest.raises(ValueError, match="shape"):
        _gate(panel, params, np.ones((ROWS, 2)), [0.5])
    with pytest.raises(ValueError, match="thresholds"):
        _gate(panel, params, np.ones((ROWS, ASSETS)), [])
