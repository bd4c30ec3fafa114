"""The leakage protocol: windows are classified from trained_through records, never by hand."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import trained_through, validate
from chaosfm.evaluate import (
    window_class_at,
    AbstractForecaster,
    Forecast,
    LastValue,
    Protocol,
    classify_window,
    evaluate,
    fit_through,
)


def series(n=400, assets=("a",), seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for asset in assets:
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": np.arange(n, dtype=float), "x0": np.cumsum(rng.normal(size=n)),
        }))
    return validate(pd.concat(parts, ignore_index=True))


class Noisy(AbstractForecaster):
    """Last value plus Gaussian noise; optionally built on an 'upstream' artifact."""

    name = "noisy"

    def __init__(self, upstream=None):
        self.upstream = upstream

    def fit(self, frame):
        self.trained_through = trained_through(frame)
        return self

    def upstream_trained_through(self):
        return [self.upstream] if self.upstream else []

    def forecast(self, context, horizon, num_samples, *, key=None):
        last = context["x0"].to_numpy()[-1]
        noise = np.asarray(jax.random.normal(key, (num_samples, horizon)))
        return Forecast(last + noise, ["x0"])


def test_classify_window_rules():
    own = {"a": 10.0}
    up = [{"a": 20.0}]
    assert classify_window(5.0, "a", 0, own, up, embargo=3) == "in_sample"
    assert classify_window(10.0, "a", 0, own, up, embargo=3) == "in_sample"
    assert classify_window(15.0, "a", 4, own, up, embargo=3) == "within_pretrain"
    assert classify_window(22.0, "a", 1, own, up, embargo=3) == "embargoed"
    assert classify_window(24.0, "a", 3, own, up, embargo=3) == "fresh"
    assert classify_window(1.0, "b", 0, own, up, embargo=3) == "fresh"  # nobody saw asset b


def test_window_class_at_counts_the_rows_between_what_was_seen_and_the_window():
    stamps = pd.bdate_range("2020-01-01", periods=60)
    own, up = {"a": stamps[19]}, [{"a": stamps[29]}, None]
    for dates in (stamps, stamps.to_numpy()):
        for t, first_target in enumerate(stamps):
            # the slow obvious count: rows strictly after the latest seen, strictly before the window
            after = sum(1 for s in stamps if stamps[29] < s < first_target)
            assert window_class_at(dates, first_target, "a", own, up, embargo=4) == classify_window(
                first_target, "a", after, own, up, embargo=4), t
    assert window_class_at(stamps, stamps[34], "a", own, up, embargo=4) == "fresh"  # rows 30..33
    assert window_class_at(stamps, stamps[33], "a", own, up, embargo=4) == "embargoed"
    assert window_class_at(np.arange(10), 3, "b", own, up, embargo=4) == "fresh"  # nobody saw b


def test_classes_follow_trained_through_and_upstream():
    frame = series()
    model = Noisy(upstream={"a": 299.0})
    fit_through({"noisy": model}, frame, cutoff=199.0)
    protocol = Protocol(horizon=5, num_samples=20, min_context=50, embargo=5, context_length=100)
    results = evaluate({"noisy": model}, frame, protocol, cutoff=199.0)
    table = results.scores
    origins = table.groupby("window_class")["origin"].agg(["min", "max", "count"])
    assert origins.loc["in_sample", "max"] <= 199.0
    assert origins.loc["within_pretrain", "min"] > 199.0 and origins.loc["within_pretrain", "max"] <= 299.0
    assert origins.loc["fresh", "min"] >= 300.0 + 5
    summary = results.summary()["noisy"]
    assert summary["n_embargoed"] == 1  # origin 300: right after what the upstream saw
    gap = summary["leakage_gap"]["crps"]
    fresh, within = summary["fresh"]["crps"], summary["within_pretrain"]["crps"]
    assert gap["value"] == pytest.approx(fresh - within)
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]


def test_empty_class_is_reported_not_omitted():
    frame = series()
    model = LastValue()
    fit_through({"last_value": model}, frame, cutoff=199.0)
    results = evaluate([model], frame, Protocol(horizon=5, num_samples=1, min_context=50))
    entry = results.to_dict()["models"]["last_value"]
    assert entry["within_pretrain"]["n_windows"] == 0
    assert entry["within_pretrain"]["crps"] is None
    assert entry["leakage_gap"]["crps"] == {"value": None, "ci_low": None, "ci_high": None}


def test_future_rows_never_change_earlier_scores():
    frame = series(seed=1)
    changed = frame.copy()
    changed.loc[changed["timestamp"] > 250, "x0"] += 100.0
    protocol = Protocol(horizon=5, num_samples=16, min_context=50, context_length=80)
    scores = []
    for data in (frame, changed):
        model = Noisy()
        fit_through({"noisy": model}, data, cutoff=150.0)
        table = evaluate([model], data, protocol).scores
        scores.append(table[table["origin"] + protocol.horizon - 1 <= 250].reset_index(drop=True))
    pd.testing.assert_frame_equal(scores[0], scores[1])


def test_unfitted_and_misshapen_forecasters_are_refused():
    frame = series()
    with pytest.raises(ValueError, match="not fitted"):
        evaluate([Noisy()], frame)

    class Wrong(Noisy):
        def forecast(self, context, horizon, num_samples, *, key=None):
            return Forecast(np.zeros((num_samples, horizon + 1)), ["x0"])

    model = Wrong().fit(frame.iloc[:100])
    with pytest.raises(ValueError, match="expected"):
        evaluate([model], frame, Protocol(horizon=5, num_samples=4, min_context=50))


def test_multi_asset_windows_use_each_assets_own_record():
    frame = series(assets=("a", "b"))
    model = Noisy()
    model.fit(frame[frame["asset"] == "a"].iloc[:200])
    results = evaluate([model], frame, Protocol(horizon=5, num_samples=8, min_context=50, embargo=0))
    b = results.scores[results.scores["asset"] == "b"]
    assert set(b["window_class"]) == {"fresh"}


def test_forecasts_are_kept_only_when_asked_and_match_the_scores():
    frame = series(n=200)
    model = Noisy()
    fit_through({"noisy": model}, frame, cutoff=120.0)
    protocol = Protocol(horizon=4, num_samples=16, min_context=50, embargo=0, metrics=("mae",))
    assert evaluate([model], frame, protocol).forecasts is None
    results = evaluate([model], frame, protocol, keep_forecasts=True)
    kept = results.forecasts
    assert len(kept) == len(results.scores) * 4 and list(kept["step"].iloc[:4]) == [1, 2, 3, 4]
    values = frame.set_index("timestamp")["x0"]
    np.testing.assert_allclose(kept["observed"], values.loc[kept["timestamp"]].to_numpy(), rtol=1e-6)
    mae = (kept["median"] - kept["observed"]).abs().groupby(kept["origin"]).mean()
    np.testing.assert_allclose(mae.to_numpy(), results.scores.set_index("origin")["mae"].loc[mae.index], rtol=1e-4)


def test_models_are_compared_on_the_windows_they_all_scored():
    frame = series(n=300)
    early, late = Noisy(), LastValue()
    fit_through({"early": early}, frame, cutoff=100.0)
    fit_through({"late": late}, frame, cutoff=200.0)
    protocol = Protocol(horizon=5, num_samples=8, min_context=50, embargo=0, metrics=("mae",))
    results = evaluate({"early": early, "late": late}, frame, protocol)
    fresh = results.compared("fresh")
    scores = results.scores[results.scores["window_class"] == "fresh"]
    late_origins = set(scores.loc[scores["model"] == "late", "origin"])
    assert fresh["windows"]["early"] > fresh["windows"]["late"] == fresh["n_windows"] == len(late_origins) > 0
    shared = scores[scores["origin"].isin(late_origins)]
    for name in ("early", "late"):
        expected = shared.loc[shared["model"] == name, "mae"].mean()
        assert fresh["models"][name]["mae"] == pytest.approx(expected)
    assert results.summary()["early"]["fresh"]["mae"] != pytest.approx(fresh["models"]["early"]["mae"])
    assert results.to_dict()["compared"]["fresh"] == fresh


def test_skipping_in_sample_windows_leaves_every_other_score_unchanged():
    frame = series(n=260)
    model = Noisy()
    fit_through({"noisy": model}, frame, cutoff=150.0)
    every = evaluate([model], frame, Protocol(horizon=4, num_samples=8, min_context=50, embargo=2, metrics=("mae",)))
    fresh_only = evaluate(
        [model], frame, Protocol(horizon=4, num_samples=8, min_context=50, embargo=2, metrics=("mae",),
                                 score_in_sample=False),
    )
    assert (every.scores["window_class"] == "in_sample").sum() > 0
    assert set(fresh_only.scores["window_class"]) == {"fresh"}
    pd.testing.assert_frame_equal(
        every.scores[every.scores["window_class"] != "in_sample"].reset_index(drop=True), fresh_only.scores
    )


def test_paired_compares_each_model_with_the_reference():
    frame = series(n=300)
    noisy, last = Noisy(), LastValue()
    fit_through({"noisy": noisy, "last": last}, frame, cutoff=150.0)
    results = evaluate({"noisy": noisy, "last": last}, frame,
                       Protocol(horizon=5, step=1, num_samples=8, min_context=50, embargo=0, metrics=("mae",)))
    assert results.paired()["models"] == {}  # no reference set
    results.reference = "last"
    paired = results.paired()
    fresh = results.scores[results.scores["window_class"] == "fresh"].pivot(index="origin", columns="model", values="mae")
    assert paired["block"] == 5 and set(paired["models"]) == {"noisy"}
    entry = paired["models"]["noisy"]["mae"]
    assert entry["value"] == pytest.approx((fresh["noisy"] - fresh["last"]).mean())
    assert entry["ci_low"] < entry["value"] < entry["ci_high"]
    assert results.to_dict()["paired"]["fresh"] == paired


def test_each_asset_of_a_multi_asset_frame_is_compared_on_its_own():
    frame = series(n=200, assets=("a", "b"))
    model = Noisy()
    fit_through({"noisy": model}, frame, cutoff=120.0)
    results = evaluate([model], frame, Protocol(horizon=4, num_samples=8, min_context=50, embargo=0, metrics=("mae",)))
    assets = results.to_dict()["assets"]
    fresh = results.scores[results.scores["window_class"] == "fresh"]
    for asset in ("a", "b"):
        mine = assets[asset]["compared"]["fresh"]
        assert mine["n_windows"] == (fresh["asset"] == asset).sum()
        assert mine["models"]["noisy"]["mae"] == pytest.approx(fresh.loc[fresh["asset"] == asset, "mae"].mean())
    assert "assets" not in evaluate([model], series(n=200), Protocol(horizon=4, num_samples=8, min_context=50,
                                                                      embargo=0, metrics=("mae",))).to_dict()


def test_a_forecaster_that_reads_all_history_gets_it_and_the_others_the_context_length():
    class Recording(Noisy):
        def __init__(self, reads_all):
            super().__init__()
            self.reads_all_history = reads_all
            self.contexts = []

        def forecast(self, context, horizon, num_samples, *, key=None):
            self.contexts.append((float(context["timestamp"].iloc[0]), float(context["timestamp"].iloc[-1])))
            return super().forecast(context, horizon, num_samples, key=key)

    frame = series(n=300)
    streaming, windowed = Recording(True), Recording(False)
    streaming.name, windowed.name = "streaming", "windowed"
    fit_through({"streaming": streaming, "windowed": windowed}, frame, cutoff=199.0)
    evaluate([streaming, windowed], frame, Protocol(horizon=5, num_samples=4, min_context=50, context_length=80))
    assert streaming.contexts and len(streaming.contexts) == len(windowed.contexts)
    for (first_all, last_all), (first, last) in zip(streaming.contexts, windowed.contexts):
        assert first_all == 0.0 and last_all == last  # the whole history up to the same origin
        assert first == max(0.0, last + 1 - 80)


def test_the_first_window_says_that_models_compile_when_progress_is_shown(capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    frame = series(n=120)
    model = Noisy()
    fit_through({"noisy": model}, frame, cutoff=59.0)
    evaluate({"noisy": model}, frame, Protocol(horizon=5, num_samples=4, min_context=50), cutoff=59.0)
    assert capsys.readouterr().err.count("evaluating windows: compiling (first forecast of each model)...") == 1
