"""Tests for chaosfm.evaluate._paired: paired differences against a reference, block bootstrap."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.evaluate import block_means, bootstrap_interval, overlap_block, paired_differences


def scores_of(values: dict[str, list[float]], window_class: str = "fresh") -> pd.DataFrame:
    rows = []
    for model, column in values.items():
        for i, value in enumerate(column):
            rows.append({"model": model, "asset": "a", "origin": i, "window_class": window_class, "crps": value})
    return pd.DataFrame(rows)


def test_block_means_average_consecutive_windows_within_each_asset():
    index = pd.MultiIndex.from_tuples([("a", 2), ("a", 0), ("a", 1), ("b", 0), ("b", 1)])
    values = pd.Series([3.0, 1.0, 2.0, 10.0, 20.0], index=index)
    np.testing.assert_allclose(block_means(values, 2), [1.5, 3.0, 15.0])


def test_overlap_block_spans_one_horizon():
    assert overlap_block(5, 1) == 5
    assert overlap_block(5, 2) == 3
    assert overlap_block(5, 5) == overlap_block(5, 9) == 1


def test_paired_difference_is_the_mean_difference_with_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    garch = rng.normal(10, 1, 60)
    model = garch - 0.5 + rng.normal(0, 0.1, 60)
    out = paired_differences(scores_of({"garch": list(garch), "m": list(model)}), ["garch", "m"], "garch", ["crps"])
    entry = out["m"]["crps"]
    assert set(out) == {"m"}
    assert entry["value"] == pytest.approx(np.mean(model - garch))
    assert entry["n_windows"] == 60
    expected = bootstrap_interval([model - garch], seed=[0, 0])
    assert entry["ci_low"] == pytest.approx(expected["ci_low"]) and entry["ci_high"] == pytest.approx(expected["ci_high"])
    assert entry["ci_high"] < 0


def test_blocks_of_duplicated_windows_give_the_interval_of_the_distinct_ones():
    # Each window repeated twice (perfectly overlapping): blocks of 2 resample the 30 distinct
    # differences, not 60 pseudo-independent ones.
    rng = np.random.default_rng(1)
    distinct = rng.normal(0.0, 1.0, 30)
    repeated = np.repeat(distinct, 2)
    scores = scores_of({"ref": [0.0] * 60, "m": list(repeated)})
    blocked = paired_differences(scores, ["m"], "ref", ["crps"], block=2)["m"]["crps"]
    alone = bootstrap_interval([distinct], seed=[0, 0])
    naive = paired_differences(scores, ["m"], "ref", ["crps"], block=1)["m"]["crps"]
    assert blocked["ci_low"] == pytest.approx(alone["ci_low"]) and blocked["ci_high"] == pytest.approx(alone["ci_high"])
    assert naive["ci_high"] - naive["ci_low"] < blocked["ci_high"] - blocked["ci_low"]


def test_only_shared_windows_of_the_class_are_paired_and_a_missing_reference_gives_nothing():
    scores = pd.concat([
        scores_of({"ref": [1.0, 2.0, 3.0], "m": [2.0, 2.0]}),
        scores_of({"ref": [100.0], "m": [0.0]}, window_class="in_sample"),
    ])
    entry = paired_differences(scores, ["m", "ref"], "ref", ["crps"])["m"]["crps"]
    assert entry["n_windows"] == 2 and entry["value"] == pytest.approx(0.5)
    assert paired_differences(scores, ["m"], "garch", ["crps"]) == {}
