"""Bins: Chronos scaling, reserved tokens, the round-trip error bound, quantiles fitted on
training rows only, per-channel trajectories, files and bad input."""

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import DataError, EmptyDataError, LeakageError, NonFiniteError, TimeFence
from chaosfm.tokenizers import EOS, PAD, BinTokenizer, load_tokenizer, mean_abs_scale


def test_mean_abs_scale_is_chronos():
    values = np.array([[1.0, 0.0], [-3.0, 0.0]])
    np.testing.assert_array_equal(mean_abs_scale(values), [2.0, 1.0])  # 0 becomes 1


def test_uniform_bins_reserve_pad_and_eos_and_round_trip_within_half_a_bin(trajectory):
    tokenizer = BinTokenizer().fit(trajectory)
    assert tokenizer.vocab_size == 4096 and (PAD, EOS) == (0, 1)
    assert tokenizer.value_names == ("x0", "x1")
    codes = tokenizer.encode(trajectory)
    assert codes.shape == (len(trajectory), 2) and codes.dtype == np.int32
    assert codes.min() >= 2 and codes.max() < 4096
    one = trajectory[trajectory["asset"] == "p"][["x0", "x1"]].to_numpy()
    codes, scale = tokenizer.encode_values(one)
    np.testing.assert_allclose(scale, np.abs(one).mean(axis=0))
    decoded = tokenizer.decode(codes, scale=scale)
    half_bin = 30 / (4094 - 1) / 2
    assert np.all(np.abs(decoded - one) <= half_bin * scale[None, :] + 1e-9)
    assert np.isnan(tokenizer.decode(np.array([[PAD, EOS]]), scale=scale)).all()
    # Far outside [-15, 15] clips to the edge bins.
    edge, _ = tokenizer.encode_values(np.array([[-1e6, 0.0], [1e6, 1.0]]), scale=[1.0, 1.0])
    assert edge[0, 0] == 2 and edge[1, 0] == 4095


def test_quantile_bins_are_fitted_on_training_rows_only(trajectory):
    fence = TimeFence(10.0)
    with pytest.raises(LeakageError, match="BinTokenizer.fit"):
        BinTokenizer(kind="quantile", vocab_size=18).fit(trajectory, fence=fence)
    train = fence.train(trajectory)
    tokenizer = BinTokenizer(kind="quantile", vocab_size=18, context_length=1000).fit(train, fence=fence)
    assert tokenizer.trained_through == {"p": 10.0, "q": 10.0}
    # Each of the 16 bins holds 1/16 of the (scaled) training values of each channel.
    counts = np.stack([np.bincount(c, minlength=18)[2:] for c in tokenizer.encode(train).T])
    assert counts.min() >= 0.8 * len(train) / 16 and counts.max() <= 1.2 * len(train) / 16
    # Changing rows after the cutoff changes nothing that was fitted.
    changed = trajectory.copy()
    changed.loc[changed["timestamp"] > 10.0, "x0"] *= 5
    again = BinTokenizer(kind="quantile", vocab_size=18, context_length=1000).fit(fence.train(changed))
    np.testing.assert_array_equal(again.encode(trajectory), tokenizer.encode(trajectory))


def test_market_frames_tokenise_close_and_reconstruct(candles):
    tokenizer = BinTokenizer().fit(candles)
    assert tokenizer.value_names == ("close",)
    truth, recon = tokenizer.targets(candles), tokenizer.reconstruct(candles)
    assert np.max(np.abs(truth["close"] - recon["close"]) / truth["close"]) < 0.01
    tokens = tokenizer.tokens(candles)
    assert list(tokens.columns) == ["asset", "timestamp", "channel", "code"] and len(tokens) == len(candles)


@pytest.mark.parametrize("kind", ["uniform", "quantile"])
def test_save_load_gives_the_same_codes(trajectory, tmp_path, kind):
    tokenizer = BinTokenizer(kind=kind, vocab_size=256, context_length=64).fit(trajectory)
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BinTokenizer) and loaded.config == tokenizer.config
    assert loaded.trained_through == tokenizer.trained_through
    np.testing.assert_array_equal(loaded.encode(trajectory), tokenizer.encode(trajectory))


def test_bad_input_and_settings(trajectory):
    with pytest.raises(ConfigError, match="0 bins"):
        BinTokenizer(vocab_size=2)
    with pytest.raises(ConfigError, match="kind"):
        BinTokenizer(kind="log")
    with pytest.raises(EmptyDataError):
        BinTokenizer().fit(trajectory.iloc[:0])
    broken = trajectory.copy()
    broken.loc[5, "x1"] = np.inf
    with pytest.raises(NonFiniteError, match="row 5"):
        BinTokenizer().fit(broken)
    tokenizer = BinTokenizer().fit(trajectory)
    with pytest.raises(ConfigError, match="scale"):
        tokenizer.decode(np.array([[3, 3]]))
    with pytest.raises(DataError, match="codes must lie"):
        tokenizer.decode(np.array([[3, 4096]]), scale=1.0)
    with pytest.raises(DataError, match="shape"):
        tokenizer.encode_values(np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="not fitted"):
        BinTokenizer().encode(trajectory)
    with pytest.raises(DataError, match="lacks"):
        tokenizer.encode(pd.DataFrame({"asset": ["p"], "timestamp": [0.0], "x0": [1.0]}))
