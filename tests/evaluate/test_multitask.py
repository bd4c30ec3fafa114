"""Scoring the multitask head: per-class numbers by hand, and the per-class table of a predictions frame.

The end-to-end run (train, predict, score, write the folder) is in tests/jobs/test_multitask_scoring.py.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from chaosfm.evaluate import multitask_table, score_multitask
from chaosfm.evaluate._multitask import _class_scores


def test_class_scores_by_hand():
    part = pd.DataFrame({
        "asset": ["a"] * 5,
        "direction": [0, 1, 2, 2, 1],
        "predicted_direction": [0, 2, 2, 1, 1],
        "forward_return": [-0.10, 0.00, 0.08, 0.30, -0.02],
        "0.1": [-0.05, -0.05, -0.05, -0.05, -0.05],
        "0.9": [0.05, 0.05, 0.10, 0.10, 0.05],
        "forward_vol": [0.2, 0.1, 0.3, 0.2, 0.1],
        "predicted_vol": [0.1, 0.1, 0.3, 0.2, 0.2],
        "persistence_vol": [0.2, 0.2, 0.2, 0.2, 0.2],
    })
    scores = _class_scores(part, horizon=2, climatology=(-0.04, 0.06))
    assert scores["n_windows"] == 5 and scores["n_nonoverlapping"] == 3  # origins 0, 2, 4
    # recalls: down 1/1, flat 1/2, up 1/2
    assert np.isclose(scores["balanced_accuracy"], (1 + 0.5 + 0.5) / 3)
    assert np.isclose(scores["balanced_accuracy"], balanced_accuracy_score(part["direction"], part["predicted_direction"]))
    assert scores["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    # inside [0.1, 0.9]: rows 1, 2, 4
    assert np.isclose(scores["coverage_80"], 3 / 5)
    y, low = part["forward_return"].to_numpy(), part["0.1"].to_numpy()
    expected = np.mean(np.maximum(0.1 * (y - low), -0.9 * (y - low)))
    assert np.isclose(scores["pinball_10"], expected)
    assert np.isclose(scores["climatology_coverage_80"], 2 / 5)  # rows 1 and 4 lie in [-0.04, 0.06]
    assert np.isclose(scores["vol_rmse"], np.sqrt((0.01 + 0.01) / 5))
    assert np.isclose(scores["persistence_vol_rmse"], np.sqrt((0.01 + 0.01 + 0.01) / 5))
    assert _class_scores(part.iloc[:0], 2, (-0.04, 0.06)) == {"n_windows": 0, "n_nonoverlapping": 0}


def predictions_frame():
    """Windows of two assets in every split, with the class the protocol gave each."""
    rng = np.random.default_rng(1)
    layout = [("train", "in_sample")] * 6 + [("validation", "within_pretrain")] * 4 + \
        [("validation", "embargoed")] * 2 + [("test", "fresh")] * 5
    n = len(layout)
    return pd.DataFrame({
        "asset": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
        "split": [s for s, _ in layout],
        "window_class": [c for _, c in layout],
        "direction": rng.integers(0, 3, n),
        "predicted_direction": rng.integers(0, 3, n),
        "forward_return": rng.normal(0, 0.05, n),
        "0.1": np.full(n, -0.05),
        "0.9": np.full(n, 0.05),
        "forward_vol": rng.uniform(0.1, 0.3, n),
        "predicted_vol": rng.uniform(0.1, 0.3, n),
        "persistence_vol": rng.uniform(0.1, 0.3, n),
    })


def test_score_multitask_from_a_predictions_frame():
    predictions = predictions_frame()
    metrics = score_multitask(predictions, horizon=2)
    # Climatology: the 10% and 90% quantiles of the training windows' own forward returns.
    train_returns = predictions.loc[predictions["split"] == "train", "forward_return"].to_numpy()
    low, high = np.quantile(train_returns, [0.1, 0.9])
    assert metrics["climatology_quantiles"] == {"0.1": low, "0.9": high}
    assert list(metrics["classes"]) == ["in_sample", "within_pretrain", "fresh"]
    for name, count in (("in_sample", 6), ("within_pretrain", 4), ("fresh", 5)):
        part = predictions[predictions["window_class"] == name]
        scores = metrics["classes"][name]
        assert scores == _class_scores(part, 2, (low, high))
        assert scores["n_windows"] == count
        y = part["forward_return"].to_numpy()
        assert np.isclose(scores["climatology_coverage_80"], np.mean((y >= low) & (y <= high)))
        assert np.isclose(scores["accuracy"], np.mean(part["direction"] == part["predicted_direction"]))
    # Embargoed windows are counted, never scored; every split names the classes its windows got.
    assert metrics["n_embargoed_by_protocol"] == 2
    assert metrics["split_by_class"] == {
        "test": {"fresh": 5}, "train": {"in_sample": 6}, "validation": {"embargoed": 2, "within_pretrain": 4},
    }
    table = multitask_table(metrics)
    assert table["class"].tolist() == ["in_sample", "within_pretrain", "fresh"]
    assert table["windows"].tolist() == [6, 4, 5]
    assert "cover 0.1-0.9" in table.columns  # quantile columns named by level, as chaosfm forecast names them
    # A class with no window scores nothing (and its table row is empty, not a number).
    empty = score_multitask(predictions[predictions["window_class"] != "fresh"], horizon=2)
    assert empty["classes"]["fresh"] == {"n_windows": 0, "n_nonoverlapping": 0}
    assert multitask_table(empty).iloc[2, 3:].isna().all() and multitask_table(empty)["windows"].tolist()[2] == 0
