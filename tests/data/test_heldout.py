"""Held-out rows for a training run's val_loss: the last training rows, disjoint from what is trained on."""

import numpy as np
import pytest

from chaosfm.data import heldout_split, heldout_windows


def _streams(lengths):
    # Each position holds its own index, so a window shows which positions it read.
    return {f"asset{i}": {"pos": np.arange(n), "twice": 2 * np.arange(n)} for i, n in enumerate(lengths)}


def test_the_held_out_rows_are_the_last_training_rows_and_never_trained_on():
    split = heldout_split(_streams([100, 40, 12]), 0.1, window=10)
    # 100 rows lend max(10, ceil(10)) = 10; 40 rows lend the window (10 > 4); 12 rows cannot lend
    # 10 and keep a 10-row window, so they stay whole in training.
    assert split.first == {"asset0": 90, "asset1": 30}
    for asset, n in (("asset0", 100), ("asset1", 40)):
        train_pos, held_pos = split.train[asset]["pos"], split.heldout[asset]["pos"]
        assert train_pos.max() < held_pos.min()  # held-out rows come after every trained row...
        assert held_pos.max() == n - 1  # ...and end at the stream's last row: the cutoff, not past it
        assert np.array_equal(np.concatenate([train_pos, held_pos]), np.arange(n))  # disjoint, complete
        np.testing.assert_array_equal(split.heldout[asset]["twice"], 2 * held_pos)  # arrays stay aligned
    assert "asset2" not in split.heldout and split.train["asset2"]["pos"].size == 12
    assert split.note is None


def test_nothing_is_held_out_and_the_note_says_why():
    assert heldout_split(_streams([100]), 0.0, 10).note == "val_fraction is 0"
    short = heldout_split(_streams([15]), 0.2, 10)
    assert short.heldout == {} and "longest: 15 positions; needs 20" in short.note
    with pytest.raises(ValueError, match="val_fraction"):
        heldout_split(_streams([100]), 1.0, 10)


def test_held_out_windows_tile_the_tails_from_their_last_row():
    split = heldout_split(_streams([100, 60]), 0.25, window=10)
    batch = heldout_windows(split.heldout, 10, count=100)
    starts = sorted(int(w[0]) for w in batch["pos"])
    # asset0 lends rows 75..99: windows 90..99 and 80..89; asset1 lends rows 45..59: window 50..59.
    assert starts == [50, 80, 90]
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 10)) for w in batch["pos"])
    assert heldout_windows(split.heldout, 10, count=2)["pos"].shape == (2, 10)
    assert heldout_windows({}, 10, count=4) is None


def test_held_out_windows_can_be_filtered_before_they_are_counted():
    split = heldout_split(_streams([100]), 0.3, window=10)  # rows 70..99: three windows
    batch = heldout_windows(split.heldout, 10, count=5, keep=lambda w: w["pos"][0] != 80)
    assert sorted(int(w[0]) for w in batch["pos"]) == [70, 90]
