"""``chaosfm.evaluate(df, models, h)``: the protocol over Nixtla and Chronos frames, equal to the
library path on the chaosfm frame."""

import numpy as np
import pandas as pd
import pytest

import chaosfm
from chaosfm._config import ConfigError
from chaosfm.data import TimeFence, validate
from chaosfm.evaluate import Protocol, evaluate, make_forecaster


def _closes(rows=260, series=("a", "b")):
    rng = np.random.default_rng(3)
    parts = []
    for k, name in enumerate(series):
        close = 50 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
        parts.append(pd.DataFrame({"unique_id": name, "ds": pd.bdate_range("2021-01-01", periods=rows), "y": close}))
    return pd.concat(parts, ignore_index=True)


def test_the_package_is_callable_and_equals_the_library_path_on_the_same_windows():
    df = _closes()
    results = chaosfm.evaluate(df, ["random_walk", "ar"], h=3, num_samples=40, seed=1)
    # The same by hand: the chaosfm frame, each series fenced at its row at 80%, the library evaluate.
    frame = validate(df.rename(columns={"unique_id": "asset", "ds": "timestamp", "y": "close"}), "hand")
    fence = TimeFence.at_fraction(frame, 0.8, embargo=5)
    models = {name: make_forecaster(name).fit(fence.train(frame)) for name in ("random_walk", "ar")}
    expected = evaluate(models, frame, Protocol(horizon=3, num_samples=40, embargo=5, score_in_sample=False, seed=1))
    got, want = results.scores, expected.scores
    assert len(got) == len(want) > 0 and set(got["window_class"]) == {"fresh"}
    np.testing.assert_allclose(got["crps"].to_numpy(), want["crps"].to_numpy(), rtol=1e-6)
    assert results.summary()["ar"]["fresh"]["n_windows"] == expected.summary()["ar"]["fresh"]["n_windows"]
    # Each series was fitted through its own 80% row, and nothing after it.
    stamps = {name: part["ds"].iloc[int(len(part) * 0.8) - 1] for name, part in df.groupby("unique_id")}
    assert {k: pd.Timestamp(v) for k, v in models["ar"].trained_through.items()} == stamps


def test_chronos_frames_a_cutoff_and_named_models():
    df = _closes(series=("x",)).rename(columns={"unique_id": "item_id", "ds": "timestamp", "y": "target"})
    forecaster = chaosfm.Forecaster.from_name("random_walk")
    results = chaosfm.evaluate(df, {"rw": forecaster, "last": "last_value"}, h=2, cutoff="2021-09-30",
                               num_samples=20)
    assert set(results.scores["model"]) == {"rw", "last"}
    origins = pd.to_datetime(results.scores["origin"])
    assert (origins > pd.Timestamp("2021-09-30")).all()


def test_a_typo_in_a_model_name_is_suggested():
    with pytest.raises(ConfigError, match="did you mean 'garch'"):
        chaosfm.evaluate(_closes(), ["garh"])
