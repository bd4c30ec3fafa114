"""The shared candle machinery: the numpy feature path agrees with chaosfm.data.candle_features."""

import jax
import numpy as np
import pytest

from chaosfm.data import MissingColumnError, candle_features, validate
from chaosfm.tokenizers import FSQTokenizer, VQVAETokenizer
from chaosfm.tokenizers._base import asset_slices
from chaosfm.tokenizers._candle_features import feature_arrays

from ._data import market_frame

SHAPE = ("log_return", "symlog_return", "body", "upper_wick", "lower_wick", "range")


@pytest.mark.parametrize("names", [SHAPE, ("range", "body"), ("realized_vol", "body")])
def test_fast_features_match_candle_features(names):
    frame = market_frame(rows=80, assets=("x", "y", "z"), seed=3)
    # Interleave the assets' rows: the fast path must not assume contiguous blocks.
    frame = frame.iloc[np.argsort(np.tile(np.arange(80), 3), kind="stable")].reset_index(drop=True)
    slices = asset_slices(frame)
    assert [a for a, _ in slices] == ["x", "y", "z"]
    reference = candle_features(frame)[list(names)].to_numpy()
    for (_, rows), fast in zip(slices, feature_arrays(frame, names, slices)):
        np.testing.assert_allclose(fast, reference[rows], rtol=1e-12, atol=1e-15, equal_nan=True)


@pytest.mark.parametrize("tokenizer", [FSQTokenizer, VQVAETokenizer])
def test_candle_tokenizers_refuse_a_close_only_frame_by_name(tokenizer):
    close_only = validate(market_frame(rows=60)[["asset", "timestamp", "close"]])
    name = tokenizer.name
    with pytest.raises(MissingColumnError, match=f"the {name} tokenizer .*needs open, high and low columns; "
                                                 "this frame has close only"):
        tokenizer().fit(close_only, key=jax.random.key(0), steps=1)
    with pytest.raises(MissingColumnError, match=f"the {name} tokenizer"):
        tokenizer().check_encodable(close_only, "data.names: sp500_stocks")


def test_a_fit_trains_nothing_on_its_held_out_rows_and_scores_them():
    from ._data import TINY_FSQ

    frame = market_frame(rows=120, assets=("a",), seed=5)
    # The last 20 rows moved by a different factor each (a valid frame still): they lie in the
    # held-out tail (max(window 16, ceil(0.25 * 119 rows past the warm-up)) = 30 rows).
    changed = frame.copy()
    factor = np.exp(0.05 * np.random.default_rng(9).standard_normal(20))
    changed.loc[changed.index[-20:], ["open", "high", "low", "close"]] *= factor[:, None]
    fits = [FSQTokenizer(**TINY_FSQ).fit(f, key=jax.random.key(0), steps=6, val_fraction=0.25, eval_every=3)
            for f in (frame, validate(changed))]
    trained = [[(h["step"], h["loss"]) for h in fit.history if "loss" in h] for fit in fits]
    held = [{h["step"]: h["val_loss"] for h in fit.history if "val_loss" in h} for fit in fits]
    assert trained[0] == trained[1]  # the gradient never read the held-out rows...
    np.testing.assert_array_equal(fits[0].encode(frame), fits[1].encode(frame))  # ...nor the normalisation
    assert sorted(held[0]) == [0, 3, 6]  # before the first step, every 3 steps, after the last
    assert all(held[0][s] != held[1][s] for s in held[0])  # but the held-out loss did
