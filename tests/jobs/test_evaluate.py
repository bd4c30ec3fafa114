"""``chaosfm evaluate`` in-process: the run folder, the default cutoff, errors before any output."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.jobs import evaluate
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION


def write_market(path, n=120):
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0,
    }).to_csv(path, index=False)
    return path


def small(tmp_path, **values):
    data = {
        "datasets": [{"name": str(write_market(tmp_path / "market.csv"))}],
        "models": ["random_walk", "last_value"],
        "protocol": {"horizon": 3, "num_samples": 8, "context_length": 30, "min_context": 25, "step": 3,
                     "embargo": 2},
        "out": str(tmp_path / "eval"),
    }
    return evaluate.read(None, {**data, **values})


def test_evaluate_writes_its_run_folder_with_the_default_cutoff(tmp_path):
    config = small(tmp_path)
    assert config.cutoff_fraction == DEFAULT_CUTOFF_FRACTION == 0.8
    metrics = evaluate.run(config)
    out = tmp_path / "eval"
    assert {"metrics.json", "scores.parquet", "report.html", "config.yaml", "meta.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    (entry,) = metrics["datasets"].values()
    assert set(entry["models"]) == {"random_walk", "last_value"}
    assert entry["models"]["last_value"]["fresh"]["n_windows"] > 0
    # 120 daily rows: the default fence is the row at 80%, 2020-04-05 (row 96, the 96th day).
    meta = json.loads((out / "meta.json").read_text())
    (seen,) = meta["trained_through"].values()
    assert seen == {"market": "2020-04-05T00:00:00"}
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["model"]) == {"random_walk", "last_value"}


def test_bad_models_and_cutoffs_fail_before_the_run_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        evaluate.run(small(tmp_path, models=["oracle"]))
    with pytest.raises(ConfigError, match="cutoff"):
        evaluate.run(small(tmp_path, cutoff="1990-01-01"))
    assert not (tmp_path / "eval").exists()
    with pytest.raises(ConfigError, match="datasets"):
        evaluate.read(None, {"datasets": []})


# ---- a user's own trajectory: the exponent and dt from flags, a sidecar or the timestamps ----------
LYAPUNOV, DT = 0.9056, 0.02


def lorenz(n=320, dt=DT):
    """A Lorenz-63 trajectory ``(n, 3)`` by RK4 in NumPy (no diffrax: the test stays fast)."""
    def field(s):
        return np.array([10.0 * (s[1] - s[0]), s[0] * (28.0 - s[2]) - s[1], s[0] * s[1] - 8.0 / 3.0 * s[2]])

    def step(s):
        k1 = field(s)
        k2 = field(s + dt / 2 * k1)
        k3 = field(s + dt / 2 * k2)
        return s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + field(s + dt * k3))

    state, rows = np.array([1.0, 1.0, 1.0]), []
    for i in range(300 + n):
        state = step(state)
        if i >= 300:
            rows.append(state)
    return np.array(rows)


def write_trajectory(path, channels=3, times=None):
    values = lorenz()[:, :channels]
    times = DT * np.arange(len(values)) if times is None else times
    frame = pd.DataFrame({"timestamp": times, **{f"x{i}": values[:, i] for i in range(channels)}})
    frame.to_csv(path, index=False)
    return frame


def on_trajectory(tmp_path, path, out="eval", **values):
    data = {
        "datasets": [{"name": str(path)}], "models": ["last_value", "context_parroting"],
        "protocol": {"horizon": 25, "num_samples": 4, "context_length": 100, "min_context": 50, "step": 25,
                     "embargo": 0, "max_windows": 6},
        "out": str(tmp_path / out),
    }
    return evaluate.read(None, {**data, **values})


def window_scores(tmp_path, out):
    return pd.read_parquet(tmp_path / out / "scores.parquet").sort_values(["model", "origin"]).reset_index(drop=True)


def test_vpt_of_a_user_csv_with_the_flags_equals_vpt_with_the_frames_attrs(tmp_path):
    from chaosfm.data import load
    from chaosfm.evaluate import fit_through
    from chaosfm.evaluate import evaluate as score
    from chaosfm.forecasters import make_forecaster

    path = tmp_path / "lorenz.csv"
    write_trajectory(path)
    config = on_trajectory(tmp_path, path, **{"protocol.lyapunov_exponent": LYAPUNOV, "protocol.dt": DT})
    metrics = evaluate.run(config)
    (entry,) = metrics["datasets"].values()
    assert (entry["lyapunov_exponent"], entry["dt"], entry["warnings"]) == (LYAPUNOV, DT, [])
    flags = window_scores(tmp_path, "eval")
    # the same frame scored by the library with the exponent and dt in its attrs, as a built-in system has them
    frame = load(path)
    frame.attrs.update(lyapunov_exponent=LYAPUNOV, dt=DT)
    forecasters = {name: make_forecaster(name) for name in config.models}
    cutoff = entry["cutoff"]["lorenz"]
    fit_through(forecasters, frame, cutoff, 0)
    results = score(forecasters, frame, config.protocol.model_copy(update={"lyapunov_exponent": None, "dt": None}))
    attrs = results.scores.assign(origin=results.scores["origin"].astype(str))
    attrs = attrs.sort_values(["model", "origin"]).reset_index(drop=True)
    vpt = ["valid_prediction_time", "vpt_x0", "vpt_x1", "vpt_x2"]
    assert np.isfinite(flags[vpt].to_numpy()).all() and (flags["valid_prediction_time"] > 0).any()
    np.testing.assert_array_equal(flags[vpt].to_numpy(), attrs[vpt].to_numpy())
    # without --dt, dt is the timestamps' even spacing: the same numbers
    evaluate.run(on_trajectory(tmp_path, path, out="inferred", **{"protocol.lyapunov_exponent": LYAPUNOV}))
    np.testing.assert_array_equal(window_scores(tmp_path, "inferred")[vpt].to_numpy(), flags[vpt].to_numpy())


def test_per_channel_vpt_is_valid_prediction_time_of_that_channel_alone(tmp_path):
    from chaosfm.evaluate import valid_prediction_time

    path = tmp_path / "lorenz.csv"
    frame = write_trajectory(path)
    evaluate.run(on_trajectory(tmp_path, path, models=["last_value"],
                               **{"protocol.lyapunov_exponent": LYAPUNOV, "protocol.dt": DT}))
    scores = window_scores(tmp_path, "eval")
    values = frame[["x0", "x1", "x2"]].to_numpy()
    checked = 0
    for row in scores.itertuples():
        origin = int(np.flatnonzero(np.isclose(frame["timestamp"], float(row.origin)))[0])
        truth = values[origin : origin + 25]
        last = np.broadcast_to(values[origin - 1], truth.shape)  # last_value's forecast
        for channel in range(3):
            expected = valid_prediction_time(last[:, channel], truth[:, channel], LYAPUNOV, dt=DT,
                                             scale=values[:origin, channel].std())
            assert getattr(row, f"vpt_x{channel}") == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked >= 9
    assert (scores["vpt_x1"] != scores["vpt_x0"]).any()  # each channel its own, not one number copied


def test_a_univariate_file_gets_vpt_on_its_one_channel(tmp_path):
    from chaosfm.evaluate import valid_prediction_time

    path = tmp_path / "x.csv"
    frame = write_trajectory(path, channels=1)
    (tmp_path / "x.json").write_text(json.dumps({"lyapunov_exponent": LYAPUNOV, "dt": DT}))
    metrics = evaluate.run(on_trajectory(tmp_path, path, models=["last_value"]))
    (entry,) = metrics["datasets"].values()
    assert entry["lyapunov_exponent"] == LYAPUNOV and "vpt_x0" not in entry["models"]["last_value"]["fresh"]
    scores = window_scores(tmp_path, "eval")
    values = frame["x0"].to_numpy()
    origin = int(np.flatnonzero(np.isclose(frame["timestamp"], float(scores["origin"].iloc[0])))[0])
    expected = valid_prediction_time(np.full(25, values[origin - 1]), values[origin : origin + 25], LYAPUNOV, dt=DT,
                                     scale=values[:origin].std())
    assert scores["valid_prediction_time"].iloc[0] == pytest.approx(expected, abs=1e-12)


def test_the_sidecar_is_read_and_flags_override_it(tmp_path):
    path = tmp_path / "lorenz.csv"
    write_trajectory(path)
    exact = {"protocol.lyapunov_exponent": LYAPUNOV, "protocol.dt": DT}
    evaluate.run(on_trajectory(tmp_path, path, out="flags", **exact))
    (tmp_path / "lorenz.json").write_text(json.dumps({"lyapunov_exponent": LYAPUNOV, "dt": DT}))
    (entry,) = evaluate.run(on_trajectory(tmp_path, path, out="sidecar"))["datasets"].values()
    assert (entry["lyapunov_exponent"], entry["dt"]) == (LYAPUNOV, DT)
    vpt = ["valid_prediction_time", "vpt_x1"]
    np.testing.assert_array_equal(window_scores(tmp_path, "sidecar")[vpt], window_scores(tmp_path, "flags")[vpt])
    (tmp_path / "lorenz.json").write_text(json.dumps({"lyapunov_exponent": 5.0, "dt": 1.0}))
    (entry,) = evaluate.run(on_trajectory(tmp_path, path, out="over", **exact))["datasets"].values()
    assert (entry["lyapunov_exponent"], entry["dt"]) == (LYAPUNOV, DT)
    np.testing.assert_array_equal(window_scores(tmp_path, "over")[vpt], window_scores(tmp_path, "flags")[vpt])


def test_without_an_exponent_vpt_is_nan_and_a_warning_names_the_flags(tmp_path):
    path = tmp_path / "lorenz.csv"
    write_trajectory(path)
    (entry,) = evaluate.run(on_trajectory(tmp_path, path, models=["last_value"]))["datasets"].values()
    assert entry["models"]["last_value"]["fresh"]["valid_prediction_time"] is None
    assert entry["models"]["last_value"]["fresh"]["rmse"] is not None  # everything else is scored
    (warning,) = entry["warnings"]
    assert all(word in warning for word in ("NaN", "--lyapunov", "--dt", "lorenz.json"))
    assert entry["lyapunov_exponent"] is None


def test_bad_or_unknowable_exponent_and_dt_fail_before_the_run_folder(tmp_path):
    path = tmp_path / "lorenz.csv"
    write_trajectory(path)
    for key, value in (("lyapunov_exponent", -0.9), ("lyapunov_exponent", float("inf")), ("dt", 0.0)):
        with pytest.raises(ConfigError, match=f"protocol.{key}"):
            on_trajectory(tmp_path, path, **{f"protocol.{key}": value})
    uneven = tmp_path / "uneven.csv"
    times = DT * np.arange(320.0)
    times[100:] += DT  # a missing row
    write_trajectory(uneven, times=times)
    with pytest.raises(ConfigError, match=r"--dt.*row 100.*not evenly spaced"):
        evaluate.run(on_trajectory(tmp_path, uneven, **{"protocol.lyapunov_exponent": LYAPUNOV}))
    dated = tmp_path / "dated.csv"
    write_trajectory(dated, times=pd.date_range("2024-01-01", periods=320, freq="s").astype(str))
    with pytest.raises(ConfigError, match=r"--dt.*dates"):
        evaluate.run(on_trajectory(tmp_path, dated, **{"protocol.lyapunov_exponent": LYAPUNOV}))
    assert not (tmp_path / "eval").exists()
    # with --dt given, uneven or dated rows are scored as DT apart
    metrics = evaluate.run(on_trajectory(tmp_path, dated, **{"protocol.lyapunov_exponent": LYAPUNOV, "protocol.dt": DT}))
    assert next(iter(metrics["datasets"].values()))["dt"] == DT


# ---- forecasts.parquet: every scored forecast, read back against the data and the scores ----------
def test_forecasts_parquet_holds_every_scored_forecast_and_agrees_with_the_scores(tmp_path):
    from chaosfm.data import load

    config = small(tmp_path, models=["random_walk", "last_value", "context_parroting"],
                   **{"protocol.min_context": 45, "protocol.context_length": 60})
    evaluate.run(config)
    out = tmp_path / "eval"
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    scores = pd.read_parquet(out / "scores.parquet")
    levels = [str(q) for q in config.protocol.quantile_levels]
    assert levels == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert {"dataset", "asset", "origin", "step", "timestamp", "column", "model", "window_class", "observed",
            "point", "mean", "median", *levels} <= set(forecasts.columns)
    assert forecasts["timestamp"].dtype.kind == "M" and forecasts["origin"].dtype.kind == "M"
    # horizon x columns rows for every window scored, and no others
    windows = forecasts.groupby(["model", "asset", "origin"])
    assert (windows.size() == 3).all() and len(windows) == len(scores)
    assert windows["step"].agg(lambda steps: sorted(steps) == [1, 2, 3]).all()
    assert set(forecasts["column"]) == {"close"}
    assert (windows["timestamp"].min().to_numpy() == windows.size().index.get_level_values("origin")).all()
    # observed is the data at the target timestamp
    frame = load(tmp_path / "market.csv").set_index("timestamp")
    np.testing.assert_allclose(forecasts["observed"], frame.loc[forecasts["timestamp"], "close"], rtol=1e-6)
    # quantiles are ordered, the 0.5 quantile is the median
    assert (np.diff(forecasts[levels].to_numpy(), axis=1) >= 0).all()
    assert (forecasts["0.5"] == forecasts["median"]).all()
    # MAE recomputed from the saved point forecast equals the saved score, window by window
    forecasts["error"] = (forecasts["point"] - forecasts["observed"]).abs()
    recomputed = forecasts.groupby(["model", "origin"])["error"].mean().rename("recomputed").reset_index()
    scores["origin"] = pd.to_datetime(scores["origin"])
    both = scores.merge(recomputed, on=["model", "origin"], validate="one_to_one")
    assert len(both) == len(scores)
    float32 = 2 * np.finfo(np.float32).eps * forecasts["observed"].abs().max()  # seven digits of the price
    np.testing.assert_allclose(both["recomputed"], both["mae"], rtol=0, atol=float32)
    # where a model gives no point of its own the point is the median; context parroting gives its own
    own = forecasts["model"] == "context_parroting"
    assert (forecasts.loc[~own, "point"] == forecasts.loc[~own, "median"]).all()
    assert (forecasts.loc[own, "point"] != forecasts.loc[own, "median"]).any()
    # the report's tables say which windows they compare the models on
    n_fresh = int((scores.loc[scores["model"] == "last_value", "window_class"] == "fresh").sum())
    assert f"Scores: fresh, on the {n_fresh} windows every model scored" in (out / "report.html").read_text()


def test_a_trajectorys_forecasts_have_numeric_time_and_one_row_per_channel(tmp_path):
    path = tmp_path / "lorenz.csv"
    frame = write_trajectory(path)
    evaluate.run(on_trajectory(tmp_path, path, models=["last_value"]))
    forecasts = pd.read_parquet(tmp_path / "eval" / "forecasts.parquet")
    assert forecasts["timestamp"].dtype == np.float64 and forecasts["origin"].dtype == np.float64
    assert (forecasts.groupby("origin").size() == 25 * 3).all()
    observed = forecasts.pivot(index="timestamp", columns="column", values="observed")
    np.testing.assert_allclose(observed, frame.set_index("timestamp").loc[observed.index, observed.columns], rtol=1e-6)


def test_a_run_mixing_dates_and_numeric_time_writes_one_forecast_file_per_dataset(tmp_path):
    dated = pd.DataFrame({"asset": "a", "timestamp": pd.to_datetime(["2024-01-01"]), "observed": [1.0]})
    numeric = pd.DataFrame({"asset": "b", "timestamp": [0.5], "observed": [2.0]})
    paths = evaluate.write_forecasts(tmp_path, {"sp500": dated, "lorenz63": numeric})
    assert [p.name for p in paths] == ["forecasts-sp500.parquet", "forecasts-lorenz63.parquet"]
    assert pd.read_parquet(paths[0])["timestamp"].dtype.kind == "M"
    (path,) = evaluate.write_forecasts(tmp_path, {"one": dated, "two": dated})
    assert path.name == "forecasts.parquet" and list(pd.read_parquet(path)["dataset"]) == ["one", "two"]


def test_calibrate_adds_a_calibrated_copy_of_every_model(tmp_path):
    config = small(tmp_path, calibrate=["split", "aci"], calibration={"calibration_fraction": 0.5})
    metrics = evaluate.run(config)
    (entry,) = metrics["datasets"].values()
    names = {"random_walk", "last_value", "random_walk+split", "last_value+split", "random_walk+aci", "last_value+aci"}
    assert set(entry["models"]) == names
    fresh = entry["compared"]["fresh"]
    assert len(set(fresh["windows"].values())) == 1 and fresh["n_windows"] > 0
    # last_value's raw interval is a point; calibrated, it is an interval that covers something
    assert fresh["models"]["last_value"]["coverage_80"] == 0.0
    assert fresh["models"]["last_value+split"]["coverage_80"] > 0.3
    forecasts = pd.read_parquet(tmp_path / "eval" / "forecasts.parquet")
    assert set(forecasts["model"]) == names
    calibrated = forecasts[forecasts["model"] == "last_value+split"]
    assert (calibrated["0.9"] > calibrated["0.1"]).all()


def test_bad_calibration_options_fail_before_the_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="calibration"):
        evaluate.run(small(tmp_path, calibrate=["split"], calibration={"calibration_fraction": 2.0}))
    with pytest.raises(ConfigError, match="calibrate"):
        small(tmp_path, calibrate=["cqr"])
    assert not (tmp_path / "eval").exists()


def test_models_are_paired_with_the_reference_and_a_bad_reference_fails_first(tmp_path):
    metrics = evaluate.run(small(tmp_path, reference="last_value"))
    (entry,) = metrics["datasets"].values()
    paired = entry["paired"]["fresh"]
    assert paired["reference"] == "last_value" and set(paired["models"]) == {"random_walk"}
    assert paired["models"]["random_walk"]["crps"]["n_windows"] == entry["compared"]["fresh"]["n_windows"]
    with pytest.raises(ConfigError, match="reference: 'garch' is not scored"):
        evaluate.run(small(tmp_path, reference="garch", out=str(tmp_path / "other")))
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", ["bench-markets", "bench-markets-runs", "bench-calibration", "evaluate-example"])
def test_evaluate_presets_parse_and_name_registered_models(name):
    from pathlib import Path

    from chaosfm.forecasters import FORECASTERS

    config = evaluate.read(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert config.datasets and set(config.models or []) <= set(FORECASTERS)


def test_what_a_model_fitted_is_written_to_metrics(tmp_path):
    config = small(tmp_path, models=["random_walk", "ensemble"],
                   model_options={"ensemble": {"members": ["random_walk", "last_value"], "validation_samples": 20}})
    metrics = evaluate.run(config)
    (entry,) = metrics["datasets"].values()
    weights = entry["fitted"]["ensemble"]["weights"]["3"]
    assert set(weights) == {"random_walk", "last_value"} and sum(weights.values()) == pytest.approx(1.0)
    assert weights["random_walk"] > weights["last_value"]  # a spread beats none on a random walk
    assert set(entry["fitted"]) == {"ensemble"}  # models that chose nothing are not listed


def test_the_default_models_skip_what_cannot_fit_and_score_the_rest(tmp_path):
    # 210 rows fenced at 80%: 168 rows, 167 returns; GARCH and HAR-RV need 250.
    path = write_market(tmp_path / "short.csv", n=210)
    values = {"datasets": [{"name": str(path)}], "models": None,
              "protocol": {"horizon": 5, "num_samples": 8, "max_windows": 2}}
    metrics = evaluate.run(small(tmp_path, **values))
    entry = metrics["datasets"]["short"]
    assert set(entry["skipped"]) == {"garch", "har_rv"}
    assert "min_fit_returns=250" in entry["skipped"]["garch"] and "the frame has 167" in entry["skipped"]["garch"]
    expected = [m for m in evaluate.DEFAULT_MODELS["market"] if m not in ("garch", "har_rv")]
    assert list(entry["compared"]["fresh"]["models"]) == expected
    assert set(pd.read_parquet(tmp_path / "eval" / "scores.parquet")["model"]) == set(expected)
    # A model the user names must fit: bad input, named.
    with pytest.raises(ConfigError, match=r"short.csv: model garch cannot fit the rows through the cutoff .*250"):
        evaluate.run(small(tmp_path, **{**values, "models": ["garch", "ar"], "out": str(tmp_path / "named")}))


def test_an_evaluation_that_can_score_no_fresh_window_fails_first_saying_why(tmp_path):
    with pytest.raises(ConfigError, match=r"no window to score: .*--horizon 100,000,000 .*the longest asset has 120 rows"):
        evaluate.run(small(tmp_path, protocol={"horizon": 100_000_000}))
    with pytest.raises(ConfigError, match=r"no fresh window to score: at most 0 rows of an asset come after the "
                                          r"cutoff 2021-01-01T00:00:00"):
        evaluate.run(small(tmp_path, cutoff="2021-01-01"))  # the data end on 2020-04-29
    # 120 rows at 80%: 24 rows after the cutoff; embargo 20 and horizon 5 need 25.
    with pytest.raises(ConfigError, match=r"no fresh window to score: at most 24 rows"):
        evaluate.run(small(tmp_path, protocol={"horizon": 5, "embargo": 20, "min_context": 25}))
    # One window kept of many: the first, long before the cutoff.
    with pytest.raises(ConfigError, match=r"no fresh window to score: --max-windows 1 keeps that many"):
        evaluate.run(small(tmp_path, protocol={"horizon": 5, "min_context": 25, "max_windows": 1}))
    assert not (tmp_path / "eval").exists()


def test_a_forecast_larger_than_memory_is_refused_saying_what_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "available_memory", lambda: 2**30)
    # One (samples, horizon 3, channel 1) float64 forecast and its 12 working copies: 12 * 8 * 3 bytes a sample.
    fits = 2**30 // (12 * 8 * 3)
    with pytest.raises(ConfigError, match=rf"--num-samples 100,000,000 with --horizon 3 .* at most {fits:,} samples fit"):
        evaluate.run(small(tmp_path, protocol={"horizon": 3, "num_samples": 100_000_000}))
    assert not (tmp_path / "eval").exists()
    evaluate.run(small(tmp_path, protocol={"horizon": 3, "num_samples": 8, "min_context": 25}))  # what fits runs
