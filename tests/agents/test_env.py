"""The trading environment: hand-computed P&L and costs, episodes inside their fence, causal
features, vmap equal to a loop, and one episode on the built-in cross-section of stocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm.agents import (
    EnvConfig,
    MarketPanel,
    eligible_starts,
    env_observe,
    env_reset,
    env_reset_at,
    env_step,
    market_panel,
    soft_allocation,
)
from chaosfm.data import load, validate
from chaosfm.evaluate import BacktestSettings

ROWS = 300
reset = jax.jit(env_reset, static_argnums=1)  # the config is static: it sets shapes
step = jax.jit(env_step, static_argnums=1)
HAND = EnvConfig(n_assets=2, holding=2, episode_rebalances=2, cost_bps=10.0, impact=0.1, gross_leverage=2.0)


def _frame(seed: int = 0) -> pd.DataFrame:
    """Five close-only assets on business days: D is listed at row 120, E misses rows 200-209."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2000-01-03", periods=ROWS)
    parts = []
    for name in "ABCDE":
        close = 50.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(ROWS)))
        keep = np.ones(ROWS, bool)
        if name == "D":
            keep[:120] = False
        if name == "E":
            keep[200:210] = False
        parts.append(pd.DataFrame({"asset": name, "timestamp": dates[keep], "close": close[keep]}))
    return validate(pd.concat(parts, ignore_index=True))


def _tiny_panel() -> MarketPanel:
    """Two assets valid on rows 0-4 and a third with no data at row 3."""
    returns = jnp.array([[0.0, 0.0, 0.0], [0.01, -0.02, 0.0], [0.02, 0.01, 0.0], [-0.03, 0.05, 0.0],
                         [0.04, -0.01, 0.0]], jnp.float32)
    valid = jnp.ones((5, 3), bool).at[3, 2].set(False)
    features = jnp.arange(15, dtype=jnp.float32).reshape(5, 3, 1)
    return MarketPanel(returns, valid, features)


def test_hand_computed_episode(key):
    panel = _tiny_panel()
    config = HAND
    state = reset(panel, config, key=key, first=0, last=4)  # the only start is row 0
    assert int(state.t) == 0 and sorted(np.asarray(state.assets).tolist()) == [0, 1]  # asset 2 has a hole
    np.testing.assert_array_equal(env_observe(panel, state)[:, 0], np.asarray(state.assets))  # row 0: feature = column
    order = np.asarray(state.assets)  # the draw's order of the assets: weights are given per asset
    first_target, second_target = np.array([0.6, -0.4]), np.array([0.2, 0.5])

    state, out = step(panel, config, state, jnp.asarray(first_target[order], jnp.float32))
    # Asset 0 earns 1.01 * 1.02 - 1 = 0.0302, asset 1 earns 0.98 * 1.01 - 1 = -0.0102 over rows 1-2.
    # From flat: turnover 1, costs 10e-4 * 1 + 0.1 * (0.36 + 0.16) = 0.053, gross 0.6 * 0.0302 + 0.4 * 0.0102.
    np.testing.assert_allclose(out.asset_returns, np.array([0.0302, -0.0102])[order], atol=1e-6)
    np.testing.assert_allclose(out.turnover, 1.0, atol=1e-6)
    np.testing.assert_allclose(out.costs, 0.053, atol=1e-6)
    np.testing.assert_allclose(out.portfolio_return, 0.0222 - 0.053, atol=1e-6)
    assert not bool(out.done) and int(state.t) == 2 and int(state.step) == 1
    # Buy and hold: the weights drift to w (1 + R) / (1 - c + w . R), the capital after the hold.
    drifted = np.array([0.6 * 1.0302, -0.4 * 0.9898]) / (1.0 - 0.053 + 0.0222)
    np.testing.assert_allclose(state.weights, drifted[order], atol=1e-6)

    state, out = step(panel, config, state, jnp.asarray(second_target[order], jnp.float32))
    trade = second_target - drifted
    returns = np.array([0.97 * 1.04 - 1.0, 1.05 * 0.99 - 1.0])  # rows 3-4
    costs = np.sum(1e-3 * np.abs(trade) + 0.1 * trade**2)
    np.testing.assert_allclose(out.asset_returns, returns[order], atol=1e-6)
    np.testing.assert_allclose(out.turnover, np.sum(np.abs(trade)), atol=1e-6)
    np.testing.assert_allclose(out.costs, costs, atol=1e-6)
    np.testing.assert_allclose(out.portfolio_return, second_target @ returns - costs, atol=1e-6)
    assert bool(out.done) and int(state.t) == 4
    # The costs are the backtest's, trade for trade.
    np.testing.assert_allclose(out.costs, BacktestSettings(cost_bps=10.0, impact=0.1).cost(trade).sum(), atol=1e-6)


def test_a_markets_holidays_carry_its_close_and_a_suspension_does_not():
    # Two markets with different holidays on one union calendar: B is closed on rows 100-101 (a
    # holiday), C on rows 100-109 (a suspension, longer than holiday_rows).
    rng = np.random.default_rng(4)
    dates = pd.bdate_range("2000-01-03", periods=200)
    closes = {name: 50.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(200))) for name in "ABC"}
    absent = {"A": [], "B": [100, 101], "C": list(range(100, 110))}
    parts = [pd.DataFrame({"asset": n, "timestamp": dates.delete(absent[n]), "close": np.delete(closes[n], absent[n])})
             for n in "ABC"]
    frame = validate(pd.concat(parts, ignore_index=True))
    panel, stamps, names = market_panel(frame, fit_end=str(dates[150].date()), holiday_rows=5)
    returns, valid, features = (np.asarray(x, np.float64) for x in (panel.returns, panel.valid, panel.features))
    assert len(stamps) == 200 and valid[95:110, 0].all()
    # B: valid through its holiday, flat on it, and the whole three-day move on the next close.
    assert valid[95:110, 1].all() and returns[100, 1] == 0 and returns[101, 1] == 0
    np.testing.assert_allclose(returns[102, 1], closes["B"][102] / closes["B"][99] - 1, rtol=1e-5)
    # Its features there are what a trader knows at the close of row 100: the 1-row log return of the
    # carried close is 0 (standardised: the 1-row feature of a flat row), the realized volatility its last.
    assert features[100, 1, 0] == features[101, 1, 0] != features[99, 1, 0]
    assert features[100, 1, 3] == features[99, 1, 3]
    # C: invalid over the suspension, and holding_rows=0 restores the old rule for B too.
    assert not valid[100:110, 2].any()
    strict, _, _ = market_panel(frame, fit_end=str(dates[150].date()), holiday_rows=0)
    assert not np.asarray(strict.valid)[100:102, 1].any()
    with pytest.raises(ValueError, match="holiday_rows"):
        market_panel(frame, fit_end=str(dates[150].date()), holiday_rows=-1)


def test_gross_leverage_caps_the_target(key):
    panel = _tiny_panel()
    state = reset(panel, HAND, key=key, first=0, last=4)
    state, out = step(panel, HAND, state, jnp.array([1.5, -1.5]))  # gross 3 is scaled down to 2
    np.testing.assert_allclose(out.turnover, 2.0, atol=1e-6)
    np.testing.assert_allclose(out.costs, 2e-3 + 0.1 * 2, atol=1e-6)
    np.testing.assert_allclose(out.asset_returns[0] - out.asset_returns[1] - out.costs, out.portfolio_return,
                               atol=1e-6)


def test_episodes_stay_inside_their_bounds(key):
    panel, stamps, names = market_panel(_frame(), fit_end="2000-06-30")
    assert names == list("ABCDE") and len(stamps) == ROWS
    valid = np.asarray(panel.valid)
    assert not valid[:140, 3].any() and valid[141:199, 3].all()  # D: warm-up of 20 rows after its listing
    # E: invalid in its hole, the row after it, and where a return's far end (5 or 20 rows back) falls in it.
    assert not valid[200:215, 4].any() and valid[215:220, 4].all() and not valid[220:230, 4].any()
    config = EnvConfig(n_assets=3, holding=4, episode_rebalances=5)
    span = config.episode_rows
    fence, embargo = 150, 10
    draw = jax.jit(jax.vmap(lambda p, k, first, last: env_reset(p, config, key=k, first=first, last=last),
                            in_axes=(None, 0, None, None)))
    drawn = set()
    for first, last in ((0, fence), (fence + embargo, ROWS - 1)):
        states = draw(panel, jax.random.split(key, 500), first, last)
        starts, assets = np.asarray(states.t), np.asarray(states.assets)
        assert np.all(starts >= first) and np.all(starts + span <= last)
        assert len(set(starts.tolist())) > 20  # the start is drawn, not fixed
        for start, chosen in zip(starts, assets):
            assert len(set(chosen.tolist())) == 3
            assert valid[start:start + span + 1, chosen].all()
        drawn |= set(assets.ravel().tolist())
        assert np.all(np.asarray(states.weights) == 0) and np.all(np.asarray(states.step) == 0)
    assert drawn == {0, 1, 2, 3, 4}
    assert not bool(jnp.any(eligible_starts(panel, config, first=0, last=20 + span - 1)))
    with pytest.raises(ValueError, match="no episode"):
        env_reset(panel, config, key=key, first=0, last=20 + span - 1)


def test_a_reset_at_a_row_draws_assets_valid_on_its_rows(key):
    panel, _, _ = market_panel(_frame(), fit_end="2000-06-30")
    valid = np.asarray(panel.valid)
    config = EnvConfig(n_assets=3, holding=4, episode_rebalances=5)
    draw = jax.jit(jax.vmap(lambda k, t, n: env_reset_at(panel, config, t, key=k, rebalances=n),
                            in_axes=(0, None, None)))
    for t, rebalances in ((30, 5), (196, 1), (150, 3)):
        states = draw(jax.random.split(key, 200), t, rebalances)
        assert np.all(np.asarray(states.t) == t) and np.all(np.asarray(states.step) == 0)
        assert np.all(np.asarray(states.weights) == 0)
        usable = set(np.flatnonzero(valid[t:t + rebalances * 4 + 1].all(axis=0)).tolist())
        drawn = set(np.asarray(states.assets).ravel().tolist())
        assert drawn == usable  # every usable asset is drawn by some key, no other
        assert all(len(set(row.tolist())) == 3 for row in np.asarray(states.assets))
    # Deterministic in the key, eager or traced; the default episode is episode_rebalances long.
    eager = env_reset_at(panel, config, 30, key=key)
    np.testing.assert_array_equal(eager.assets, draw(key[None], 30, 5).assets[0])
    with pytest.raises(ValueError, match=r"rows \[5, 25\].*0 assets valid"):
        env_reset_at(panel, config, 5, key=key)  # the features' warm-up: no asset is valid
    with pytest.raises(ValueError, match="300 rows"):
        env_reset_at(panel, config, 290, key=key, rebalances=3)


def test_features_are_causal():
    frame = _frame()
    stamps = np.sort(frame["timestamp"].unique())
    t, fit_end = 200, stamps[150]
    panel, _, _ = market_panel(frame, fit_end=fit_end)
    later = frame["timestamp"] > stamps[t]
    changed = frame.copy()
    changed.loc[later, "close"] *= np.exp(np.random.default_rng(1).normal(0.0, 0.05, int(later.sum())))
    again, _, _ = market_panel(changed, fit_end=fit_end)
    for name in ("features", "returns", "valid"):
        np.testing.assert_array_equal(getattr(panel, name)[:t + 1], getattr(again, name)[:t + 1], err_msg=name)
    assert not np.array_equal(panel.features[t + 1:], again.features[t + 1:])
    # Standardised by the fitted rows only: there, each feature has mean 0 and deviation 1.
    fitted = np.asarray(panel.features[:151])[np.asarray(panel.valid[:151])]  # (valid cells, F)
    np.testing.assert_allclose(fitted.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(fitted.std(axis=0), 1.0, atol=1e-5)


def test_extra_features_are_appended():
    frame = _frame()
    extra = np.ones((ROWS, 5, 2), np.float32)
    extra[250, 1] = np.nan
    panel, _, _ = market_panel(frame, fit_end="2000-06-30", extra=extra)
    plain, _, _ = market_panel(frame, fit_end="2000-06-30")
    assert panel.features.shape == (ROWS, 5, 6)
    assert not bool(panel.valid[250, 1]) and bool(plain.valid[250, 1])
    np.testing.assert_array_equal(panel.valid.at[250, 1].set(True), plain.valid)
    np.testing.assert_array_equal(panel.features[:, :, :4][panel.valid], plain.features[panel.valid])
    with pytest.raises(ValueError, match="extra"):
        market_panel(frame, fit_end="2000-06-30", extra=extra[:-1])
    with pytest.raises(ValueError, match="fit_end"):
        market_panel(frame, fit_end="2000-01-20")  # inside the warm-up: nothing to standardise by
    with pytest.raises(ValueError, match="return_windows"):
        market_panel(frame, fit_end="2000-06-30", return_windows=(0, 5))


def test_vmap_matches_a_loop(key):
    panel, _, _ = market_panel(_frame(), fit_end="2000-06-30")
    config = EnvConfig(n_assets=3, holding=3, episode_rebalances=4, cost_bps=5.0, impact=0.05, gross_leverage=1.5)
    reset_keys = jax.random.split(key, 64)
    targets = 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (2, 64, 3))  # (steps, B, K)

    def episode(panel, k, weights):
        state = env_reset(panel, config, key=k, first=30, last=ROWS - 1)
        observed = env_observe(panel, state)
        outputs = []
        for w in weights:
            state, out = env_step(panel, config, state, w)
            outputs.append(out)
        return state, observed, outputs

    batched = jax.jit(jax.vmap(episode, in_axes=(None, 0, 1)))(panel, reset_keys, targets)
    batched = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(batched)]
    one = jax.jit(episode)
    for b, (reset_key, weights) in enumerate(zip(reset_keys, np.asarray(targets).swapaxes(0, 1))):
        for got, want in zip(batched, jax.tree_util.tree_leaves(one(panel, reset_key, weights))):
            np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=1e-7)


def test_an_episode_on_sp500_stocks(key):
    frame = load("sp500_stocks")
    panel, stamps, names = market_panel(frame, fit_end="2010-12-31")
    assert panel.features.shape == (8313, 20, 4) and len(names) == 20 and panel.features.dtype == jnp.float32
    fence = int(np.searchsorted(stamps, np.datetime64("2010-12-31"), side="right")) - 1
    config = EnvConfig(n_assets=16, holding=5, episode_rebalances=20, cost_bps=2.0, impact=0.01, gross_leverage=1.0)

    @jax.jit
    def run(panel, k):  # the panel as an argument, not a constant for the compiler to fold
        state = env_reset(panel, config, key=k, first=fence + 5, last=len(stamps) - 1)

        def rebalance(state, _):
            momentum = env_observe(panel, state)[:, 2]  # the standardised 20-row log return
            weights = soft_allocation(momentum, temperature=1.0, net_exposure=0.0, gross_leverage=1.0)
            return env_step(panel, config, state, weights)

        return state, jax.lax.scan(rebalance, state, length=config.episode_rebalances)

    start, (end, outputs) = run(panel, key)
    assert int(start.t) > fence + 4 and int(end.t) == int(start.t) + config.episode_rows <= len(stamps) - 1
    assert outputs.asset_returns.shape == (20, 16) and bool(outputs.done[-1]) and not bool(outputs.done[:-1].any())
    assert np.all(np.isfinite(np.asarray(outputs.portfolio_return))) and np.all(np.asarray(outputs.costs) > 0)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="n_assets"):
        EnvConfig(n_assets=0)
    with pytest.raises(ValueError, match="net_exposure"):
        EnvConfig(net_exposure=1.5, gross_leverage=1.0)
    with pytest.raises(ValueError, match="cost_bps"):
        EnvConfig(cost_bps=-1.0)
