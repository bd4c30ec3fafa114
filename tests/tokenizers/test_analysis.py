"""Token analysis (``tokenizers/_analysis.py``) against hand computations and plain Python loops."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import DataError
from chaosfm.tokenizers import (
    CodeStream,
    code_distribution,
    code_values,
    forward_returns,
    ngram_counts,
    pattern_stats,
    rare_codes,
    return_stats,
)


def test_code_distribution_matches_numpy_by_hand():
    codes = np.array([2, 2, 2, 3, 3, 4, 5, 5, 5, 5, 7])
    out = code_distribution(codes, vocab_size=9, special_tokens=2, top_k=2)
    values, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    entropy = -(p * np.log2(p)).sum()
    assert out["codes"] == 11
    assert out["top_k_coverage"] == pytest.approx((4 + 3) / 11)
    assert out["entropy_bits"] == pytest.approx(entropy)
    assert out["perplexity"] == pytest.approx(2**entropy)
    assert out["used_codes"] == 5 and out["codebook_usage"] == pytest.approx(5 / 7)  # codes 2..8
    uniform = code_distribution(np.arange(8), vocab_size=8, top_k=8)
    assert uniform["entropy_bits"] == pytest.approx(3.0) and uniform["perplexity"] == pytest.approx(8.0)
    assert uniform["top_k_coverage"] == 1.0
    with pytest.raises(DataError, match="no codes"):
        code_distribution([], vocab_size=4)


def test_ngram_counts_match_a_python_loop():
    rng = np.random.default_rng(0)
    streams = [rng.integers(0, 4, 60), rng.integers(0, 4, 2), rng.integers(0, 4, 35)]
    for n in (1, 2, 3):
        expected = Counter()
        for codes in streams:
            for i in range(len(codes) - n + 1):
                expected[tuple(int(c) for c in codes[i : i + n])] += 1
        assert ngram_counts(streams, n) == expected
    # a run never crosses from one stream into the next
    assert ngram_counts([np.array([1, 2]), np.array([3])], 2) == Counter({(1, 2): 1})


def test_forward_returns_and_their_stats_by_hand():
    close = np.array([100.0, 110.0, 99.0, 120.0, 118.0])
    out = forward_returns(close, 2)
    assert out[:3] == pytest.approx([np.log(99 / 100), np.log(120 / 110), np.log(118 / 99)])
    assert np.isnan(out[3:]).all()
    assert forward_returns([1.0, -2.0, 4.0], 1, log=False)[:2] == pytest.approx([-3.0, 6.0])
    with pytest.raises(DataError, match="positive"):
        forward_returns([1.0, -2.0], 1)
    x = np.array([0.01, -0.02, 0.03, 0.04, np.nan])
    stats = return_stats(x)
    finite = x[:4]
    sd = np.sqrt(((finite - finite.mean()) ** 2).sum() / 3)
    assert stats["count"] == 4 and stats["mean"] == pytest.approx(0.015)
    assert stats["std"] == pytest.approx(sd) and stats["hit_rate"] == 0.75
    assert stats["t"] == pytest.approx(0.015 / (sd / 2))


def test_pattern_stats_split_training_and_fresh_occurrences():
    """Code 1 is followed by +1 on the training rows and by -1 on fresh rows; the embargoed rows
    between (+100) and occurrences straddling the cutoff count in neither."""
    codes = np.array([1, 0] * 10 + [1, 0] * 2 + [1, 0] * 10)
    forward = np.where(codes == 1, 0.0, 0.0)
    forward[:20][codes[:20] == 1] = 1.0
    forward[20:24][codes[20:24] == 1] = 100.0
    forward[24:][codes[24:] == 1] = -1.0
    train_end = np.arange(44) < 20
    fresh_start = np.arange(44) >= 24
    stream = CodeStream(codes, forward, train_end, fresh_start)
    calls = []

    def interval(values):
        calls.append(values.copy())
        return {"ci_low": float(values.min()), "ci_high": float(values.max())}

    table = pattern_stats([stream], max_n=2, top_k=5, min_count=3, interval=interval)
    one = table.loc[(table["n"] == 1) & (table["pattern"] == "1")].iloc[0]
    assert one["count"] == 22
    assert one["train_count"] == 10 and one["train_mean"] == 1.0 and one["train_hit_rate"] == 1.0
    assert one["fresh_count"] == 10 and one["fresh_mean"] == -1.0 and one["fresh_hit_rate"] == 0.0
    assert one["fresh_ci_low"] == -1.0 and one["fresh_ci_high"] == -1.0
    # "0-1" ends on a 1: its move is the 1's; its first row decides freshness
    pair = table.loc[(table["n"] == 2) & (table["pattern"] == "0-1")].iloc[0]
    assert pair["train_count"] == 9 and pair["train_mean"] == 1.0
    assert pair["fresh_count"] == 9 and pair["fresh_mean"] == -1.0
    assert all(set(np.unique(v)) <= {-1.0, 0.0} for v in calls)  # the interval sees fresh moves only
    assert list(table.loc[table["n"] == 1, "rank"]) == list(range(1, (table["n"] == 1).sum() + 1))


def test_pattern_ranking_is_by_training_t_statistic():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 3000)
    forward = rng.standard_normal(3000) * 0.01 + np.where(codes == 2, 0.005, 0.0)
    mask = np.ones(3000, bool)
    table = pattern_stats([CodeStream(codes, forward, mask, ~mask)], max_n=1, top_k=3, min_count=5)
    assert table["pattern"].iloc[0] == "2"
    t = [abs(return_stats(forward[codes == int(p)])["t"]) for p in table["pattern"]]
    assert t == sorted(t, reverse=True)
    assert table["train_t"].abs().tolist() == pytest.approx(t)
    assert table["fresh_count"].eq(0).all() and table["fresh_ci_low"].isna().all()


def test_rare_codes_and_their_values():
    counts = np.zeros(12, int)
    counts[2:] = [500, 400, 300, 1, 2, 0, 200, 3, 100, 94]  # 1600 codes over 10 data codes
    rare = rare_codes(counts, special_tokens=2, factor=10)
    # share below 1 / 100: 1, 2 and 3 of 1600 (16 would not be); the unused code is not rare
    assert rare["code"].tolist() == [5, 6, 9] and rare["count"].tolist() == [1, 2, 3]
    assert rare["share"].tolist() == pytest.approx([1 / 1600, 2 / 1600, 3 / 1600])
    codes = np.array([5, 1, 5, 9])
    decoded = pd.DataFrame({"x": [1.0, 7.0, 3.0, np.nan]})
    truth = pd.DataFrame({"x": [1.5, 7.0, 2.5, 4.0]})
    table = code_values(codes, decoded, truth, [5, 9])
    assert table["rows"].tolist() == [2, 1]
    assert table["decoded_x"].iloc[0] == 2.0 and table["true_x"].iloc[0] == 2.0
    assert pd.isna(table["decoded_x"].iloc[1]) and table["true_x"].iloc[1] == 4.0
