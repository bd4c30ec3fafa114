"""Health numbers: usage, perplexity, reconstruction errors, and the table."""

import math

import numpy as np
import pandas as pd

from chaosfm.tokenizers import (
    BinTokenizer,
    code_counts,
    codebook_usage,
    health_table,
    perplexity,
    reconstruction_errors,
    tokenizer_health,
)


def test_usage_and_perplexity_by_hand():
    counts = code_counts(np.array([[2, 3], [3, 5]]), 6)
    np.testing.assert_array_equal(counts, [0, 0, 1, 2, 0, 1])
    assert codebook_usage(counts) == 0.5
    assert codebook_usage(counts, special_tokens=2) == 0.75
    assert math.isclose(perplexity(np.full(7, 3)), 7.0)
    assert math.isclose(perplexity(np.array([5, 0, 0])), 1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert math.isclose(perplexity(np.array([2, 1, 1])), math.exp(-(p * np.log(p)).sum()))


def test_reconstruction_errors_skip_undefined_rows():
    truth = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan]})
    recon = pd.DataFrame({"x": [1.0, 2.0, 4.0, 9.0]})
    errors = reconstruction_errors(truth, recon, pd.Series({"x": 2.0}), ("x",))["x"]
    assert errors["rows"] == 3
    assert math.isclose(errors["rmse"], math.sqrt(1 / 3))
    assert math.isclose(errors["mean_predictor_rmse"], math.sqrt(2 / 3))
    assert math.isclose(errors["ratio"], 1 / math.sqrt(2))


def test_tokenizer_health_of_bins(trajectory):
    train = trajectory[trajectory["timestamp"] <= 15].reset_index(drop=True)
    held_out = trajectory[trajectory["timestamp"] > 15].reset_index(drop=True)
    tokenizer = BinTokenizer(kind="quantile", vocab_size=66, context_length=100).fit(train)
    metrics = tokenizer_health(tokenizer, train, held_out, repeats=2)
    assert metrics["vocab_size"] == 66 and metrics["special_tokens"] == 2
    assert metrics["codes"] == {"train": 2 * len(train), "held_out": 2 * len(held_out)}
    assert metrics["codebook_usage"]["train"] == 1.0  # quantile bins: every bin used on training data
    assert 1 < metrics["perplexity"]["held_out"] <= 64
    assert metrics["dead_codes"] == 0
    held = metrics["reconstruction"]["held_out"]
    assert set(held) == {"x0", "x1"} and all(entry["ratio"] < 0.5 for entry in held.values())
    assert metrics["encode_candles_per_second"] > 0 and metrics["encode_candles_per_second_series"] > 0
    table = health_table(metrics)
    assert list(table.columns) == ["quantity", "train", "held_out", "all"]
    assert "codebook_usage" in set(table["quantity"])
