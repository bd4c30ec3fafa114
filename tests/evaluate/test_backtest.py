"""The backtest: positions, holds, costs and P&L against hand-computed rows; the rules; the
statistics against empyrical and worked examples."""

import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy import special

from chaosfm.data import DataError
from chaosfm.evaluate import (
    PORTFOLIO,
    RULES,
    BacktestSettings,
    backtest,
    backtest_statistics,
    deflated_sharpe_ratio,
    drawdown,
    forecast_volatility,
    probabilistic_sharpe_ratio,
    sharpe_standard_error,
    strategy_returns,
)

LEVELS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")
CLOSES = [100.0, 101.0, 99.0, 102.0, 103.0, 100.0, 98.0, 97.0]
DAYS = pd.date_range("2021-01-04", periods=len(CLOSES), freq="B")


def closes_frame(closes=CLOSES, asset="a", dataset="d", days=DAYS):
    return pd.DataFrame({"dataset": dataset, "asset": asset, "timestamp": days, "close": closes})


def window(origin_row, median_ahead, window_class, *, horizon=2, closes=CLOSES, asset="a", dataset="d", model="m",
           days=DAYS, sigma=0.01):
    """One forecast window: ``horizon`` rows from ``origin_row`` (its first target), every step's median
    ``median_ahead`` and normal quantiles of standard deviation ``sigma`` (a fraction of the median)."""
    rows = []
    for step in range(1, horizon + 1):
        target = origin_row + step - 1
        z = special.ndtri([float(q) for q in LEVELS])
        quantiles = median_ahead * (1 + sigma * z)
        rows.append({"dataset": dataset, "asset": asset, "origin": days[origin_row], "step": step,
                     "timestamp": days[target], "column": "close", "model": model, "window_class": window_class,
                     "observed": np.float32(closes[target]), "point": median_ahead, "mean": median_ahead,
                     "median": median_ahead, **dict(zip(LEVELS, quantiles))})
    return rows


def table(*windows):
    return pd.DataFrame([row for rows in windows for row in rows])


def test_sign_median_pnl_with_costs_matches_the_hand_computed_rows():
    # Window 1: context ends at row 1 (close 101), forecast 103 > 101: long rows 2-3, exit at row 3's close.
    # Window 2: context ends at row 3 (close 102), forecast 95 < 102: short rows 4-5, exit at row 5's close.
    forecasts = table(window(2, 103.0, "in_sample"), window(4, 95.0, "fresh"))
    settings = BacktestSettings(holding=2, cost_bps=10.0, impact=0.01)
    pnl = backtest(forecasts, closes_frame(), ["sign_median"], settings)
    rows = pnl[pnl["asset"] == "a"].reset_index(drop=True)
    assert list(rows["timestamp"]) == list(DAYS[2:6])  # the days held; row 1 only opens the first hold
    assert rows["position"].tolist() == [1.0, 1.0, -1.0, -1.0]
    # Trades: buy 1 at row 1's close (booked on row 2, the hold's first), flip -2 at row 3, buy back 1 at row 5.
    assert rows["turnover"].tolist() == [1.0, 2.0, 0.0, 1.0]
    gross = [99 / 101 - 1, 102 / 99 - 1, -(103 / 102 - 1), -(100 / 103 - 1)]
    cost = [0.001 + 0.01, 0.002 + 0.04, 0.0, 0.001 + 0.01]
    np.testing.assert_allclose(rows["gross"], gross, atol=1e-15)
    np.testing.assert_allclose(rows["cost"], cost, atol=1e-15)
    np.testing.assert_allclose(rows["net"], np.subtract(gross, cost), atol=1e-15)
    # Row 3 trades on both windows: the in_sample one makes it in_sample; rows 4-5 only on the fresh one.
    assert rows["window_class"].tolist() == ["in_sample", "in_sample", "fresh", "fresh"]
    book = pnl[pnl["asset"] == PORTFOLIO].reset_index(drop=True)
    np.testing.assert_allclose(book["net"], rows["net"])
    assert set(pnl["strategy"]) == {"m/sign_median"}


def test_a_shorter_hold_exits_early_and_overlapping_holds_share_the_capital():
    forecasts = table(window(2, 103.0, "fresh"), window(4, 95.0, "fresh"))
    pnl = backtest(forecasts, closes_frame(), ["sign_median"], BacktestSettings(holding=1, cost_bps=0.0))
    rows = pnl[pnl["asset"] == "a"]
    assert rows["position"].tolist() == [1.0, -1.0]  # rows 2 and 4: held one row each
    assert rows["turnover"].tolist() == [2.0, 2.0]  # in at the close before, out at the row's own close
    # Windows one row apart held two rows: two tranches overlap, each gets half the capital.
    overlapping = table(window(2, 103.0, "fresh"), window(3, 103.0, "fresh"), window(4, 95.0, "fresh"))
    rows = backtest(overlapping, closes_frame(), ["sign_median"], BacktestSettings(holding=2, cost_bps=0.0))
    rows = rows[rows["asset"] == "a"]
    assert rows["position"].tolist() == [0.5, 1.0, 0.0, -0.5]
    np.testing.assert_allclose(rows["gross"].iloc[1], 102 / 99 - 1)


def test_positions_come_from_the_data_close_not_from_the_forecasts():
    # A median of 100.5 is below the close of row 1 (101): short, whatever the forecast's own history.
    pnl = backtest(table(window(2, 100.5, "fresh")), closes_frame(), ["sign_median"], BacktestSettings(holding=2))
    assert pnl.loc[pnl["asset"] == "a", "position"].tolist() == [-1.0, -1.0]


def signals_of(rows):
    """Rule input: one row per instrument and origin."""
    frame = pd.DataFrame(rows)
    return frame.assign(origin=frame.get("origin", 0))


def normal_quantiles(last, mean, sigma):
    z = special.ndtri([float(q) for q in LEVELS])
    return dict(zip(LEVELS, last * (1 + mean + sigma * z)))


def test_forecast_volatility_recovers_a_normal_forecasts_sigma():
    signals = signals_of([{"instrument": "a", "last": 100.0, "mean": 101.0, "median": 101.0,
                           **normal_quantiles(100.0, 0.01, 0.2)}])
    np.testing.assert_allclose(forecast_volatility(signals), [0.2])


def test_kelly_and_vol_target_sizes_against_worked_values():
    settings = BacktestSettings(holding=5, max_leverage=2.0, target_volatility=0.1)
    rows = [
        {"instrument": "a", "last": 100.0, "mean": 102.0, "median": 102.0, **normal_quantiles(100.0, 0.02, 0.2)},
        {"instrument": "b", "last": 50.0, "mean": 49.0, "median": 49.0, **normal_quantiles(50.0, -0.02, 0.05)},
    ]
    signals = signals_of(rows)
    # mu / sigma^2: 0.02 / 0.04 = 0.5; -0.02 / 0.0025 = -8, capped at -2. Two instruments: half each.
    np.testing.assert_allclose(RULES["kelly"](signals, settings), [0.25, -1.0])
    # 0.1 / (0.2 * sqrt(252 / 5)) = 0.0704..., and 0.1 / (0.05 * sqrt(50.4)) = 0.2817..., signed, halved.
    annual = np.array([0.2, 0.05]) * math.sqrt(252 / 5)
    np.testing.assert_allclose(RULES["vol_target"](signals, settings), [0.05 / annual[0], -0.05 / annual[1]])
    np.testing.assert_allclose(RULES["sign_median"](signals, settings), [0.5, -0.5])


def test_long_short_goes_long_the_top_and_short_the_bottom_with_gross_one():
    expected = [0.03, -0.01, 0.02, -0.04]
    rows = [{"instrument": name, "origin": 0, "last": 100.0, "mean": 100 * (1 + r), "median": 100 * (1 + r),
             **normal_quantiles(100.0, r, 0.1)} for name, r in zip("abcd", expected)]
    weights = RULES["long_short"](signals_of(rows), BacktestSettings(holding=1))
    np.testing.assert_allclose(weights, [0.25, -0.25, 0.25, -0.25])
    weights = RULES["long_short"](signals_of(rows), BacktestSettings(holding=1, long_short_fraction=0.25))
    np.testing.assert_allclose(weights, [0.5, 0.0, 0.0, -0.5])
    with pytest.raises(ValueError, match="long_short.*no origin is shared"):
        RULES["long_short"](signals_of(rows[:1]), BacktestSettings(holding=1))


def test_long_short_across_two_assets_of_one_calendar():
    b_closes = [50.0, 50.5, 51.0, 50.0, 49.0, 48.0, 49.0, 50.0]
    forecasts = table(window(2, 103.0, "fresh"), window(2, 49.0, "fresh", asset="b", closes=b_closes))
    closes = pd.concat([closes_frame(), closes_frame(b_closes, asset="b")])
    pnl = backtest(forecasts, closes, ["long_short"], BacktestSettings(holding=2, cost_bps=0.0))
    held = pnl[pnl["timestamp"] == DAYS[2]].set_index("asset")["position"]
    assert held.to_dict() == {"a": 0.5, "b": -0.5, PORTFOLIO: 0.0}
    book = pnl[pnl["asset"] == PORTFOLIO].set_index("timestamp")["gross"]
    np.testing.assert_allclose(book[DAYS[2]], 0.5 * (99 / 101 - 1) - 0.5 * (51 / 50.5 - 1))


def test_bad_input_is_refused_naming_what_is_wrong():
    forecasts = table(window(2, 103.0, "fresh"))
    with pytest.raises(ValueError, match="unknown rule 'magic'; known rules: sign_median, kelly"):
        backtest(forecasts, closes_frame(), ["magic"])
    with pytest.raises(ValueError, match="holding 3 exceeds the forecasts' horizon 2"):
        backtest(forecasts, closes_frame(), ["sign_median"], BacktestSettings(holding=3))
    with pytest.raises(ValueError, match=r"model\(s\) \['x'\] are not in the forecasts"):
        backtest(forecasts, closes_frame(), ["sign_median"], models=["x"])
    changed = closes_frame([*CLOSES[:3], 150.0, *CLOSES[4:]])
    with pytest.raises(DataError, match="differs from the one its forecast was scored against"):
        backtest(forecasts, changed, ["sign_median"])
    with pytest.raises(DataError, match="no row of the data with a close before it"):
        backtest(forecasts, closes_frame().iloc[3:], ["sign_median"])


# ---- statistics -----------------------------------------------------------------------------------

def book(name, net, classes=None, days=None):
    """Portfolio rows of one strategy: ``net`` returns, no costs, unit turnover every 5th row."""
    n = len(net)
    days = pd.bdate_range("2015-01-01", periods=n) if days is None else days
    turnover = np.where(np.arange(n) % 5 == 0, 1.0, 0.0)
    model, rule = name.split("/")
    return pd.DataFrame({"strategy": name, "model": model, "rule": rule, "asset": PORTFOLIO, "timestamp": days,
                         "position": 1.0, "gross": net, "turnover": turnover, "cost": 0.0, "net": net,
                         "window_class": classes if classes is not None else "fresh"})


def test_statistics_agree_with_empyrical_and_the_sharpe_module():
    rng = np.random.default_rng(3)
    good = 0.0008 + 0.01 * rng.standard_t(5, 500)
    bad = -0.0002 + 0.012 * rng.standard_normal(500)
    classes = np.where(np.arange(500) < 300, "in_sample", "fresh")
    pnl = pd.concat([book("m/good", good, classes), book("m/bad", bad, classes)])
    stats = backtest_statistics(pnl, pbo_blocks=10)
    entry = stats["strategies"]["m/good"]
    assert entry["days"] == 500 and stats["n_trials"] == 2
    assert entry["sharpe"] == pytest.approx(empyrical.sharpe_ratio(good, period="daily"), rel=1e-12)
    assert entry["max_drawdown"] == pytest.approx(empyrical.max_drawdown(good), rel=1e-12)
    assert entry["annual_return"] == pytest.approx(empyrical.annual_return(good, period="daily"), rel=1e-12)
    assert entry["total_return"] == pytest.approx(empyrical.cum_returns_final(good), rel=1e-12)
    assert entry["sharpe_se"] == pytest.approx(sharpe_standard_error(good) * math.sqrt(252))
    low, high = entry["sharpe_ci"]
    assert low == pytest.approx(entry["sharpe"] - 1.959964 * entry["sharpe_se"], rel=1e-6)
    assert high == pytest.approx(entry["sharpe"] + 1.959964 * entry["sharpe_se"], rel=1e-6)
    assert entry["psr"] == pytest.approx(probabilistic_sharpe_ratio(good))
    trials = [good.mean() / good.std(ddof=1), bad.mean() / bad.std(ddof=1)]
    assert entry["dsr"] == pytest.approx(deflated_sharpe_ratio(good, trial_sharpe_ratios=trials))
    assert entry["turnover"] == pytest.approx(100 * 252 / 500)  # 100 unit trades in 500 rows
    fresh = entry["by_class"]["fresh"]
    assert fresh["days"] == 200
    assert fresh["sharpe"] == pytest.approx(empyrical.sharpe_ratio(good[300:], period="daily"), rel=1e-12)
    assert entry["by_class"]["within_pretrain"]["days"] == 0
    assert entry["by_class"]["within_pretrain"]["sharpe"] is None
    assert stats["pbo"]["n_blocks"] == 10 and stats["pbo"]["n_combinations"] == 252
    assert entry["pbo"] == stats["pbo"]["value"]


def test_pbo_is_zero_when_one_strategy_wins_everywhere_and_none_for_one_strategy():
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal((400, 3))
    # One strategy earns 1% a day more than the others in every block: never overfit.
    pnl = pd.concat([book(f"m/s{i}", noise[:, i] + (0.01 if i == 0 else 0.0)) for i in range(3)])
    assert backtest_statistics(pnl)["pbo"]["value"] == 0.0
    single = backtest_statistics(book("m/only", noise[:, 0]))
    assert single["pbo"]["value"] is None and single["strategies"]["m/only"]["dsr"] is None


def test_strategy_returns_align_on_the_union_of_days_with_zero_when_out():
    days = pd.bdate_range("2020-01-01", periods=4)
    pnl = pd.concat([book("m/a", np.array([0.01, 0.02]), days=days[:2]),
                     book("m/b", np.array([0.03, -0.01]), days=days[1:3])])
    wide = strategy_returns(pnl)
    assert list(wide.columns) == ["m/a", "m/b"]
    np.testing.assert_allclose(wide.to_numpy(), [[0.01, 0.0], [0.02, 0.03], [0.0, -0.01]])


def test_drawdown_of_a_worked_path():
    # Equity 1 -> 1.1 -> 0.88 -> 0.968: the trough is 20% below the 1.1 peak.
    np.testing.assert_allclose(drawdown(np.array([0.1, -0.2, 0.1])), [0.0, 0.0, -0.2, -0.12])
    stats = backtest_statistics(book("m/x", np.array([0.1, -0.2, 0.1])))
    assert stats["strategies"]["m/x"]["max_drawdown"] == pytest.approx(-0.2)


def test_a_forecast_equal_to_the_entry_close_in_float32_takes_no_position():
    # forecasts.parquet stores float32: last_value's median is the entry close rounded to seven
    # digits, and its sign is rounding noise, not a view.
    from chaosfm.evaluate._backtest_rules import sign_median

    close = np.array([1234.5678901, 98.7654321, 5432.1098765])
    signals = pd.DataFrame({"last": close, "median": close.astype(np.float32).astype(np.float64),
                            "mean": close, "instrument": ["a", "b", "c"], "origin": [0, 0, 0]})
    assert not np.array_equal(signals["median"], close)  # the rounding is there ...
    positions = sign_median(signals, BacktestSettings())
    np.testing.assert_array_equal(positions, 0.0)  # ... and ignored
