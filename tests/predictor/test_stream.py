"""The whole predictor through run_stream and the Forecaster wrapper (one shared compile)."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import DataError
from chaosfm.evaluate import Forecast
from chaosfm.predictor import (
    OnlinePredictorForecaster,
    PredictorConfig,
    StreamConfig,
    init_predictor,
    run_stream,
)
from chaosfm.predictor._packed_step import packed_step

# Shared: every test here and in test_predictor.py reuses one compiled step (the default
# config). fit_steps=0 skips the DGM warm start (a separate compile, tested in test_predictor.py).
PREDICTOR = PredictorConfig(dgm={"fit_steps": 0})
# No persistent compilation cache in tests: it is process-wide and would write to the user's
# cache directory (tests/predictor/test_warm.py covers it on a temporary one).
STREAM = StreamConfig(predictor=PREDICTOR, plot=False, compilation_cache=False)


def _walk(n, seed=0):
    return 100.0 + np.cumsum(np.random.default_rng(seed).standard_normal(n))


def test_run_stream_returns_its_rows_and_metrics():
    series = _walk(160)
    seen = []
    result = run_stream(STREAM, series=series, on_prediction=seen.append)
    metrics = result.metrics
    assert result.error is None
    assert len(seen) == 159 and result.predictions == seen and len(result.telemetry) == 159
    json.dumps(metrics, allow_nan=False)  # strict JSON as it is: no NaN, no NumPy scalars
    for who in ("predictor", "random_walk"):
        assert set(metrics[who]) == {"crps", "mae", "directional_accuracy"}
        assert all(np.isfinite(v) for v in metrics[who].values())
    assert metrics["latency_ms"]["p99"] >= metrics["latency_ms"]["p50"] > 0
    assert set(metrics["flags"]) == {"sinkhorn_fallback", "degraded_inference", "emergency", "regime_change",
                                     "mode_collapse", "dgm_suspended", "high_volatility", "crisis", "residual_invalid"}
    telemetry = pd.DataFrame(result.telemetry)
    weights = telemetry[[c for c in telemetry.columns if c.startswith("weight_")]].to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert {"hoelder", "cusum_statistic", "cusum_threshold", "kurtosis", "dgm_entropy", "free_energy",
            "sinkhorn_iterations", "sinkhorn_converged", "step_seconds"} <= set(telemetry.columns)
    predictions = pd.DataFrame(result.predictions)
    assert np.all(np.isfinite(predictions["prediction_next"]))


def test_a_bad_stdin_line_stops_the_stream_naming_the_line_and_keeps_the_good_rows():
    lines = ["close"] + [f"{v:.4f}" for v in _walk(40)] + ["nan"] + ["101.0"]
    result = run_stream(STREAM, lines=lines)
    assert isinstance(result.error, DataError) and "line 42" in str(result.error)
    assert len(result.predictions) == 39


def test_bad_lines_can_be_skipped(tmp_path):
    values = [f"{v:.4f}" for v in _walk(60)]
    values[30] = "inf"
    values[40] = "oops"
    metrics = run_stream(STREAM.model_copy(update={"on_bad_line": "skip"}), lines=values).metrics
    assert [b["line"] for b in metrics["bad_lines"]] == [31, 41]
    assert metrics["observations"] == 58


def test_non_finite_value_leaves_state_untouched():
    # ... but for the freshness counters of degraded_inference (a missing observation).
    step = packed_step(PREDICTOR)
    packed = step.pack(init_predictor(PREDICTOR, 100.0, key=jax.random.key(0)))
    for v in _walk(40)[1:]:
        _, packed = step(packed, np.float32(v))
    before = step.unpack(packed)
    assert (int(before.stale_steps), bool(before.degraded)) == (0, False) and int(before.fresh_steps) > 0
    before = jax.device_get(before._replace(key=jax.random.key_data(before.key)))
    out, packed = step(packed, np.float32(np.nan))
    after = step.unpack(packed)
    assert (int(after.stale_steps), int(after.fresh_steps), bool(after.degraded)) == (1, 0, False)
    after = jax.device_get(after._replace(key=jax.random.key_data(after.key), stale_steps=before.stale_steps,
                                          fresh_steps=before.fresh_steps))
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isnan(step.output(out).prediction)
    # ... and the next good value carries on from there.
    out, packed = step(packed, np.float32(101.0))
    assert np.isfinite(step.output(out).prediction)


def test_forecaster_wrapper(key):
    stamps = pd.date_range("2020-01-01", periods=120, freq="D")
    values = _walk(120, seed=3)
    frame = pd.DataFrame({"asset": "x", "timestamp": stamps, "x0": values})
    forecaster = OnlinePredictorForecaster(PREDICTOR).fit(frame.iloc[:100])
    assert forecaster.trained_through == {"x": stamps[99]}
    forecast = forecaster.forecast(frame, horizon=5, num_samples=50, key=key)
    assert isinstance(forecast, Forecast)
    assert forecast.samples.shape == (50, 5, 1)
    assert np.all(np.isfinite(forecast.samples))
    with pytest.raises(ValueError, match="key"):
        forecaster.forecast(frame, horizon=5, num_samples=50)


def test_successive_forecasts_continue_from_the_last_one_with_the_same_result(key):
    stamps = pd.date_range("2020-01-01", periods=130, freq="D")
    frame = pd.DataFrame({"asset": "x", "timestamp": stamps, "x0": _walk(130, seed=6)})
    walking = OnlinePredictorForecaster(PREDICTOR).fit(frame.iloc[:90])
    assert walking.reads_all_history
    for end in (95, 110, 111, 130):  # each context extends the last: only its new rows are fed
        cold = OnlinePredictorForecaster(PREDICTOR).fit(frame.iloc[:90])
        np.testing.assert_array_equal(walking.forecast(frame.iloc[:end], 2, 10, key=key).samples,
                                      cold.forecast(frame.iloc[:end], 2, 10, key=key).samples)
    # A context that does not extend the fed rows (an earlier origin, or other values) is fed from
    # the fitted state again, not from the cursor.
    changed = frame.iloc[:120].copy()
    changed.loc[100, "x0"] += 5.0
    for context in (frame.iloc[:100], changed):
        cold = OnlinePredictorForecaster(PREDICTOR).fit(frame.iloc[:90])
        np.testing.assert_array_equal(walking.forecast(context, 2, 10, key=key).samples,
                                      cold.forecast(context, 2, 10, key=key).samples)


def test_online_calibration_reshapes_a_near_gaussian_mixture_to_peaked_returns(key):
    # i.i.d. Laplace returns (kurtosis 6): a Gaussian of the same variance puts 0.614 of them in
    # its 50% interval (1 - exp(-0.6745 sqrt 2)). After the levels adapt on 800 rows the one-step
    # 50% interval must cover ~0.50 (standard error 0.02 over 500 origins), the raw mixture more.
    rng = np.random.default_rng(17)
    length, fitted = 1300, 800
    levels = 1000.0 + np.cumsum(rng.laplace(scale=1.0 / np.sqrt(2.0), size=length))
    frame = pd.DataFrame({"asset": "x", "timestamp": np.arange(length, dtype=float), "x0": levels})
    cover = {}
    for gammas in ((), (0.005,)):
        forecaster = OnlinePredictorForecaster(PREDICTOR, calibration_gammas=gammas).fit(frame.iloc[:fitted])
        hits = []
        for origin in range(fitted, length):
            samples = forecaster.forecast(frame.iloc[:origin], 1, 200, key=jax.random.fold_in(key, origin)).samples
            low, high = np.quantile(samples[:, 0, 0], [0.25, 0.75])
            hits.append(low <= levels[origin] <= high)
        cover[gammas] = np.mean(hits)
    assert abs(cover[(0.005,)] - 0.50) < 0.05, cover
    assert cover[()] > cover[(0.005,)] + 0.04, cover


def test_reshaping_at_the_nominal_levels_changes_no_draw():
    from chaosfm.forecasters import aci_init
    from chaosfm.predictor._forecaster import _reshaped

    draws = np.random.default_rng(2).standard_normal((300, 4))
    np.testing.assert_allclose(_reshaped(draws, aci_init((0.005, 0.05), 1, 1)), draws, atol=1e-12)


def test_the_forecaster_follows_each_asset_with_its_own_predictor(key):
    from chaosfm.forecasters import make_forecaster

    stamps = pd.date_range("2020-01-01", periods=110, freq="D")
    frames = {name: pd.DataFrame({"asset": name, "timestamp": stamps, "x0": _walk(110, seed=seed)})
              for name, seed in (("a", 4), ("b", 5))}
    both = OnlinePredictorForecaster(PREDICTOR).fit(pd.concat([f.iloc[:90] for f in frames.values()]))
    assert set(both.states) == {"a", "b"}
    for name, frame in frames.items():
        alone = OnlinePredictorForecaster(PREDICTOR).fit(frame.iloc[:90])
        np.testing.assert_array_equal(both.forecast(frame, 3, 20, key=key).samples,
                                      alone.forecast(frame, 3, 20, key=key).samples)
    unseen = frames["a"].assign(asset="c")  # an asset fit did not see: a predictor over its context
    assert np.all(np.isfinite(both.forecast(unseen, 3, 20, key=key).samples))
    with pytest.raises(AttributeError, match="several assets"):
        both.state
    assert isinstance(make_forecaster("online_predictor"), OnlinePredictorForecaster)


def test_metrics_report_startup_and_first_step():
    ready = []
    result = run_stream(STREAM, series=_walk(20), on_ready=ready.append)
    metrics = result.metrics
    assert ready == [{"startup_seconds": metrics["startup_seconds"], "metrics_url": None,
                      "compilation_cache": None, "restored_from": None}]
    assert metrics["startup_seconds"] > 0 and metrics["first_step_ms"] > 0
    assert metrics["first_step_ms"] == pytest.approx(result.telemetry[0]["step_seconds"] * 1e3)
    assert {"startup_seconds", "first_step_ms", "deterministic", "snapshots_written"} <= set(metrics)


def test_stream_config_rules():
    with pytest.raises(ValueError, match="snapshot_every needs snapshot"):
        StreamConfig(snapshot_every=5)
    with pytest.raises(ValueError, match="metrics_port"):
        StreamConfig(metrics_port=70000)


def test_adaptive_conformal_levels_move_by_gamma_after_each_observation():
    gamma = 0.05
    series = _walk(200, seed=3)
    result = run_stream(STREAM.model_copy(update={"calibration_gamma": gamma}), series=series)
    rows = pd.DataFrame(result.predictions)
    warm = rows[rows["warm"]]
    assert {"level_0.1", "level_0.9"} <= set(rows.columns)
    steps = np.diff(warm["level_0.9"].to_numpy())
    # Gibbs & Candes: +gamma * 0.9 after a miss above the 0.9 quantile, -gamma * 0.1 otherwise.
    np.testing.assert_allclose(np.minimum(np.abs(steps - 0.9 * gamma), np.abs(steps + 0.1 * gamma)), 0.0, atol=1e-12)
    assert (np.abs(steps - 0.9 * gamma) < 1e-12).any() and (np.abs(steps + 0.1 * gamma) < 1e-12).any()
    low = np.diff(warm["level_0.1"].to_numpy())
    np.testing.assert_allclose(np.minimum(np.abs(low - 0.1 * gamma), np.abs(low + 0.9 * gamma)), 0.0, atol=1e-12)
    # The stream's 10-90% interval is read at the adapted levels: it is no longer the raw one.
    raw = pd.DataFrame(run_stream(STREAM, series=series).predictions)
    assert not np.allclose(raw.loc[warm.index, "0.9"], warm["0.9"])
    assert "level_0.9" not in raw.columns


def _yahoo_lines(n, seed=0):
    """Yahoo's CSV layout: Date,Open,High,Low,Close,Adj Close,Volume (the volume is the last field)."""
    close = _walk(n, seed)
    dates = pd.bdate_range("2018-01-02", periods=n).strftime("%Y-%m-%d")
    return ["Date,Open,High,Low,Close,Adj Close,Volume"] + [
        f"{d},{c:.4f},{c + 1:.4f},{c - 1:.4f},{c:.4f},{c:.4f},{1000 + i}" for i, (d, c) in enumerate(zip(dates, close))
    ]


SKIP = STREAM.model_copy(update={"on_bad_line": "skip"})


def test_a_stdin_value_float32_cannot_hold_is_a_bad_line_on_a_value_line_and_a_csv_row():
    values = [f"{v:.4f}" for v in _walk(30)]
    values[20] = "1e300"  # finite in float64, inf in float32
    result = run_stream(STREAM, lines=values)
    assert "line 21" in str(result.error) and "representable in float32" in str(result.error)
    assert len(result.predictions) == 19
    rows = _yahoo_lines(30)
    fields = rows[21].split(",")
    fields[2] = fields[4] = "1e300"  # high and close, as in a file
    rows[21] = ",".join(fields)
    skipped = run_stream(SKIP, lines=rows)
    metrics = skipped.metrics
    assert [b["line"] for b in metrics["bad_lines"]] == [22]
    message = metrics["bad_lines"][0]["error"]
    assert "column 'high'" in message and "representable in float32" in message
    assert metrics["observations"] == 29
    assert np.all(np.isfinite([row["prediction_next"] for row in skipped.predictions]))


def test_an_oversized_stdin_line_is_reported_and_skipped():
    values = [str(v) for v in range(100, 151)] + ["9" * 200_000] + [str(v) for v in range(100, 151)]
    result = run_stream(SKIP, lines=values)
    assert result.error is None
    assert [b["line"] for b in result.metrics["bad_lines"]] == [52]
    assert "readable CSV row" in result.metrics["bad_lines"][0]["error"]
    assert [row["line"] for row in result.predictions] == list(range(2, 52)) + list(range(53, 104))


def test_stdin_timestamps_out_of_order_or_duplicate_break_the_file_rule():
    lines = ["Date,Close", "2018-01-02,100", "2018-01-03,101", "2017-06-01,102", "2018-01-04,103",
             "2018-01-04,104", "2018-01-05,105"]
    result = run_stream(STREAM, lines=lines)
    assert isinstance(result.error, DataError) and result.error.line == 4
    assert "timestamps strictly increasing" in str(result.error)
    assert [row["line"] for row in result.predictions] == [3]
    skipped = run_stream(SKIP, lines=lines)
    assert [b["line"] for b in skipped.metrics["bad_lines"]] == [4, 6]
    assert "duplicate timestamp" in skipped.metrics["bad_lines"][1]["error"]
    # The rows kept are the good ones, in order, each compared with the last good row.
    assert [row["observed"] for row in skipped.predictions] == [101.0, 103.0, 105.0]


def test_a_headerless_row_of_several_fields_is_refused_and_a_header_picks_the_close():
    rows = _yahoo_lines(25)
    closes = [float(r.split(",")[4]) for r in rows[1:]]
    headed = run_stream(STREAM, lines=rows)
    assert headed.error is None
    assert [row["observed"] for row in headed.predictions] == closes[1:]  # the Close, not the Volume
    refused = run_stream(STREAM, lines=rows[1:])
    assert isinstance(refused.error, DataError) and refused.error.line == 1
    assert "header" in str(refused.error) and refused.predictions == []
    skipped = run_stream(SKIP, lines=rows[1:])
    assert len(skipped.metrics["bad_lines"]) == 25 and skipped.predictions == []
