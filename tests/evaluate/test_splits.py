"""Tests for chaosfm.evaluate._splits: hand-worked splits and invariants under hypothesis."""

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chaosfm.evaluate import (
    CombinatorialPurgedCV,
    combinatorial_purged_cv,
    fresh_split,
    purged_kfold,
    walk_forward,
)

FAST = settings(max_examples=150, deadline=None)


def widened(start, end, before, after, n_obs):
    return set(range(max(start - before, 0), min(end + after, n_obs)))


def assert_index_array(array):
    assert array.dtype == np.int64
    assert np.all(np.diff(array) > 0)


# --------------------------------------------------------------------------------------------------
# walk_forward


def test_walk_forward_expanding_hand_worked():
    splits = list(walk_forward(12, test_size=3, purge=1))
    # first test starts at min_train_size (= test_size 3) + purge 1 = 4; the tail [10, 12) is unused
    assert [(s[0].tolist(), s[1].tolist()) for s in splits] == [
        ([0, 1, 2], [4, 5, 6]),
        ([0, 1, 2, 3, 4, 5], [7, 8, 9]),
    ]


def test_walk_forward_rolling_hand_worked():
    splits = list(walk_forward(10, test_size=2, train_size=3, step=3, purge=1, embargo=4))
    assert [(s[0].tolist(), s[1].tolist()) for s in splits] == [
        ([0, 1, 2], [4, 5]),
        ([3, 4, 5], [7, 8]),
    ]


@FAST
@given(
    n_obs=st.integers(1, 200),
    test_size=st.integers(1, 30),
    train_size=st.none() | st.integers(1, 60),
    step=st.none() | st.integers(1, 40),
    purge=st.integers(0, 10),
    embargo=st.integers(0, 10),
    min_train_size=st.none() | st.integers(1, 50),
)
def test_walk_forward_invariants(
    n_obs, test_size, train_size, step, purge, embargo, min_train_size
):
    if train_size is not None:
        min_train_size = None

    def make_splits():
        return walk_forward(
            n_obs, test_size, train_size, step, purge, embargo, min_train_size=min_train_size
        )

    first = (train_size if train_size is not None else (min_train_size or test_size)) + purge
    if first + test_size > n_obs:
        with pytest.raises(ValueError, match="too short"):
            make_splits()
        return
    splits = list(make_splits())
    step = step or test_size
    starts = [int(test[0]) for _, test in splits]
    assert starts == list(range(first, n_obs - test_size + 1, step))  # every full block, in order
    for train, test in splits:
        assert_index_array(train)
        assert_index_array(test)
        start, end = int(test[0]), int(test[-1]) + 1
        assert test.tolist() == list(range(start, start + test_size))
        assert end <= n_obs
        assert not set(train.tolist()) & widened(start, end, purge, embargo, n_obs)
        assert np.all(train < start - purge)
        assert train[-1] == start - purge - 1  # training runs right up to the purge gap
        if train_size is None:
            assert train[0] == 0 and len(train) >= (min_train_size or test_size)
        else:
            assert len(train) == train_size
    if step >= test_size:
        all_test = np.concatenate([test for _, test in splits])
        assert len(np.unique(all_test)) == len(all_test)  # disjoint test blocks


def test_walk_forward_validation():
    with pytest.raises(ValueError, match="test_size must be positive"):
        walk_forward(10, 0)
    with pytest.raises(ValueError, match="purge must be >= 0"):
        walk_forward(10, 2, purge=-1)
    with pytest.raises(ValueError, match="min_train_size applies to expanding"):
        walk_forward(10, 2, train_size=3, min_train_size=3)
    with pytest.raises(ValueError, match="step must be positive"):
        walk_forward(10, 2, step=0)


# --------------------------------------------------------------------------------------------------
# purged_kfold


def test_purged_kfold_hand_worked():
    splits = list(purged_kfold(10, n_splits=3, label_horizon=1, embargo=2))
    # folds [0, 4), [4, 7), [7, 10); training skips [start - 1, end + 2)
    assert [(s[0].tolist(), s[1].tolist()) for s in splits] == [
        ([6, 7, 8, 9], [0, 1, 2, 3]),
        ([0, 1, 2, 9], [4, 5, 6]),
        ([0, 1, 2, 3, 4, 5], [7, 8, 9]),
    ]


@FAST
@given(
    n_obs=st.integers(2, 300),
    n_splits=st.integers(2, 12),
    label_horizon=st.integers(0, 15),
    embargo=st.integers(0, 15),
)
def test_purged_kfold_invariants(n_obs, n_splits, label_horizon, embargo):
    assume(n_obs >= n_splits)
    splits = list(purged_kfold(n_obs, n_splits, label_horizon, embargo))
    assert len(splits) == n_splits
    tests = [test for _, test in splits]
    assert np.array_equal(np.concatenate(tests), np.arange(n_obs))  # disjoint, in order, covering
    sizes = [len(test) for test in tests]
    assert max(sizes) - min(sizes) <= 1
    for train, test in splits:
        assert_index_array(train)
        assert_index_array(test)
        start, end = int(test[0]), int(test[-1]) + 1
        assert test.tolist() == list(range(start, end))
        excluded = widened(start, end, label_horizon, embargo, n_obs)
        assert set(train.tolist()) == set(range(n_obs)) - excluded


def test_purged_kfold_validation():
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        purged_kfold(10, 1)
    with pytest.raises(ValueError, match="n_obs must be >= n_splits"):
        purged_kfold(3, 5)
    with pytest.raises(ValueError, match="embargo must be >= 0"):
        purged_kfold(10, 2, 0, -3)


# --------------------------------------------------------------------------------------------------
# combinatorial_purged_cv


def test_cpcv_hand_worked_paths():
    # N = 4 folds, k = 2: splits (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); 3 paths.
    cv = combinatorial_purged_cv(8, n_folds=4, n_test_folds=2)
    assert isinstance(cv, CombinatorialPurgedCV)
    assert cv.n_splits == len(cv) == 6 and cv.n_paths == 3
    np.testing.assert_array_equal(cv.paths(), [[0, 0, 1, 2], [1, 3, 3, 4], [2, 4, 5, 5]])
    train, test = list(cv)[4]  # folds 1 and 3 -> positions 2, 3, 6, 7
    assert test.tolist() == [2, 3, 6, 7] and train.tolist() == [0, 1, 4, 5]


def test_cpcv_purges_and_embargoes_each_test_fold():
    cv = combinatorial_purged_cv(20, n_folds=5, n_test_folds=2, label_horizon=1, embargo=2)
    train, test = next(iter(cv))  # folds 0 and 1: [0, 8)
    assert test.tolist() == list(range(8))
    assert train.tolist() == list(range(10, 20))
    train, test = list(cv)[1]  # folds 0 and 2: [0, 4) and [8, 12)
    assert train.tolist() == [6] + list(range(14, 20))  # 7 is purged before fold 2


@FAST
@given(
    n_obs=st.integers(2, 150),
    n_folds=st.integers(2, 8),
    n_test_folds=st.integers(1, 7),
    label_horizon=st.integers(0, 8),
    embargo=st.integers(0, 8),
)
def test_cpcv_invariants(n_obs, n_folds, n_test_folds, label_horizon, embargo):
    assume(n_test_folds < n_folds <= n_obs)
    cv = combinatorial_purged_cv(n_obs, n_folds, n_test_folds, label_horizon, embargo)
    splits = list(cv)
    assert len(splits) == cv.n_splits == math.comb(n_folds, n_test_folds)
    assert cv.n_paths == math.comb(n_folds - 1, n_test_folds - 1)
    folds = [set(range(start, end)) for start, end in cv.fold_bounds]
    assert set().union(*folds) == set(range(n_obs)) and sum(map(len, folds)) == n_obs
    seen_test_sets = set()
    for (train, test), tested in zip(splits, cv.test_folds):
        assert_index_array(train)
        assert_index_array(test)
        assert set(test.tolist()) == set().union(*(folds[f] for f in tested))
        excluded = set()
        for f in tested:
            start, end = cv.fold_bounds[f]
            excluded |= widened(start, end, label_horizon, embargo, n_obs)
        assert set(train.tolist()) == set(range(n_obs)) - excluded
        seen_test_sets.add(tuple(tested))
    assert len(seen_test_sets) == cv.n_splits  # every combination exactly once

    paths = cv.paths()
    assert paths.shape == (cv.n_paths, n_folds) and paths.dtype == np.int64
    for path in paths:
        for fold, split in enumerate(path):
            assert fold in cv.test_folds[split]  # that split really tests that fold
    # each path covers every fold once (one column per fold), and every (fold, split) pair with the
    # split testing the fold is used exactly once across paths.
    pairs = Counter((fold, int(split)) for path in paths for fold, split in enumerate(path))
    expected_pairs = {(fold, s) for s, tested in enumerate(cv.test_folds) for fold in tested}
    assert set(pairs) == expected_pairs and set(pairs.values()) == {1}
    # each split fills exactly n_test_folds (path, fold) slots
    assert Counter(paths.ravel().tolist()) == {s: n_test_folds for s in range(cv.n_splits)}


def test_cpcv_validation():
    with pytest.raises(ValueError, match="n_test_folds must be < n_folds"):
        combinatorial_purged_cv(10, 4, 4)
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        combinatorial_purged_cv(10, 1, 1)
    with pytest.raises(ValueError, match="n_test_folds must be positive"):
        combinatorial_purged_cv(10, 4, 0)
    with pytest.raises(ValueError, match="n_obs must be >= n_folds"):
        combinatorial_purged_cv(3, 4, 1)


# --------------------------------------------------------------------------------------------------
# fresh_split


def test_fresh_split_numeric():
    train, test = fresh_split(np.array([1.0, 2.0, 3.5, 4.0, 7.0, 9.0]), cutoff=3.5, embargo=1)
    assert train.tolist() == [0, 1, 2] and test.tolist() == [4, 5]
    assert train.dtype == np.int64 and test.dtype == np.int64


def test_fresh_split_datetimes():
    timestamps = pd.date_range("2024-01-01", periods=10, freq="D")
    train, test = fresh_split(timestamps, "2024-01-04 12:00", embargo=2)
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == [6, 7, 8, 9]
    train, test = fresh_split(pd.Series(timestamps), pd.Timestamp("2024-01-04"), embargo=0)
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == list(range(4, 10))
    train, test = fresh_split(timestamps.values, np.datetime64("2023-12-31"), embargo=20)
    assert train.size == 0 and test.size == 0


def test_fresh_split_validation():
    with pytest.raises(ValueError, match="sorted"):
        fresh_split([3, 1, 2], 2)
    with pytest.raises(ValueError, match="embargo must be >= 0"):
        fresh_split([1, 2, 3], 2, embargo=-1)
    with pytest.raises(ValueError, match="cannot be compared"):
        fresh_split(pd.date_range("2024-01-01", periods=3, tz="UTC"), pd.Timestamp("2024-01-02"))
