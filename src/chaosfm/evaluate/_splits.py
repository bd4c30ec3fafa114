"""Time-series cross-validation splits that keep training data away from the test window.

Every splitter works on positions ``0 .. n_obs - 1`` of one time-ordered series and yields
``(train_idx, test_idx)`` pairs of sorted ``int64`` arrays. Around each contiguous test block
``[test_start, test_end)`` a widened window ``[test_start - purge, test_end + embargo)`` is kept
free of training positions:

* *purging* (López de Prado 2018, AFML sec. 7.4.1) drops the ``purge`` / ``label_horizon``
  positions before the test block, whose labels (targets up to that many steps ahead) overlap it;
* an *embargo* (AFML sec. 7.4.2) drops ``embargo`` positions after the test block, whose
  features are serially correlated with the test labels.

With an ``h``-step label the positions right after a test block also have labels overlapping the
last test labels' span; an ``embargo >= label_horizon`` covers that side too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._config import require_int

Split = tuple[np.ndarray, np.ndarray]


def _training_outside(
    n_obs: int, test_blocks: list[tuple[int, int]], before: int, after: int
) -> np.ndarray:
    """Positions outside every widened block ``[start - before, end + after)``."""
    allowed = np.ones(n_obs, dtype=bool)
    for start, end in test_blocks:
        allowed[max(start - before, 0) : min(end + after, n_obs)] = False
    return np.flatnonzero(allowed).astype(np.int64)


def _fold_bounds(n_obs: int, n_folds: int) -> list[tuple[int, int]]:
    """Contiguous folds ``[start, end)``; the first ``n_obs % n_folds`` get one extra position."""
    sizes = np.full(n_folds, n_obs // n_folds)
    sizes[: n_obs % n_folds] += 1
    ends = np.cumsum(sizes)
    return [(int(end - size), int(end)) for size, end in zip(sizes, ends)]


def walk_forward(
    n_obs: int,
    test_size: int,
    train_size: int | None = None,
    step: int | None = None,
    purge: int = 0,
    embargo: int = 0,
    *,
    min_train_size: int | None = None,
) -> Iterator[Split]:
    """Walk-forward splits: train on the past, test on the next block, move on by ``step``.

    Test block ``i`` is ``[s_i, s_i + test_size)`` with ``s_i = first + i * step``; only blocks
    that fit entirely inside ``n_obs`` are produced (a shorter tail is left unscored). Training is
    everything in ``[0, s_i - purge)`` when expanding (``train_size=None``), or the last
    ``train_size`` of those positions when rolling. The first test block starts at
    ``first = min_train_size + purge`` when expanding and ``train_size + purge`` when rolling, so
    every split trains on at least ``min_train_size`` (resp. exactly ``train_size``) positions.

    Training always precedes its test block, so training positions never fall in
    ``[s_i - purge, s_i + test_size + embargo)``; ``embargo`` is accepted (and validated) for a
    signature shared with the other splitters, but it cannot remove anything here.

    Args:
        n_obs: number of positions.
        test_size: positions per test block, positive.
        train_size: rolling-window length; ``None`` for an expanding window.
        step: distance between consecutive test starts; defaults to ``test_size`` (adjacent,
            disjoint test blocks). A ``step`` below ``test_size`` makes test blocks overlap.
        purge: positions dropped between training and test (the label horizon), ``>= 0``.
        embargo: positions after the test block kept out of training, ``>= 0`` (no effect here).
        min_train_size: smallest expanding training set; defaults to ``test_size``. Only for
            expanding windows.

    Yields:
        ``(train_idx, test_idx)`` sorted ``int64`` position arrays.

    Raises:
        ValueError: on a non-positive size, a negative purge or embargo, ``min_train_size`` with a
            rolling window, or when not even one split fits in ``n_obs``.
    """
    n_obs = require_int(n_obs, "n_obs", 1)
    test_size = require_int(test_size, "test_size", 1)
    step = test_size if step is None else require_int(step, "step", 1)
    purge = require_int(purge, "purge", 0)
    embargo = require_int(embargo, "embargo", 0)
    if train_size is None:
        min_train_size = test_size if min_train_size is None else require_int(
            min_train_size, "min_train_size", 1
        )
        first_test_start = min_train_size + purge
    else:
        train_size = require_int(train_size, "train_size", 1)
        if min_train_size is not None:
            raise ValueError(
                "min_train_size applies to expanding windows; with train_size set, leave it None"
            )
        first_test_start = train_size + purge
    if first_test_start + test_size > n_obs:
        raise ValueError(
            f"n_obs={n_obs} is too short for one split: the first test block would be "
            f"[{first_test_start}, {first_test_start + test_size})"
        )
    return _walk_forward(n_obs, test_size, train_size, step, purge, first_test_start)


def _walk_forward(
    n_obs: int, test_size: int, train_size: int | None, step: int, purge: int, first_test_start: int
) -> Iterator[Split]:
    for test_start in range(first_test_start, n_obs - test_size + 1, step):
        train_end = test_start - purge
        train_start = 0 if train_size is None else train_end - train_size
        yield (
            np.arange(train_start, train_end, dtype=np.int64),
            np.arange(test_start, test_start + test_size, dtype=np.int64),
        )


def purged_kfold(
    n_obs: int, n_splits: int, label_horizon: int = 0, embargo: int = 0
) -> Iterator[Split]:
    """K-fold over contiguous blocks, purged and embargoed (López de Prado 2018, AFML sec. 7.4).

    The positions are cut into ``n_splits`` contiguous folds (sizes differ by at most one, the
    larger first, as in scikit-learn's ``KFold``). Each fold is the test set once; training is every
    position outside ``[test_start - label_horizon, test_end + embargo)``, so it uses data both
    before and after the test fold.

    Args:
        n_obs: number of positions, at least ``n_splits``.
        n_splits: number of folds, ``>= 2``.
        label_horizon: steps a label looks ahead; that many positions before each test fold are
            purged, ``>= 0``.
        embargo: positions after each test fold kept out of training, ``>= 0``.

    Yields:
        ``(train_idx, test_idx)`` sorted ``int64`` position arrays, folds in time order.
    """
    n_splits = require_int(n_splits, "n_splits", 2)
    n_obs = require_int(n_obs, "n_obs", 1)
    if n_obs < n_splits:
        raise ValueError(
            f"n_obs must be >= n_splits={n_splits} so every fold is non-empty; got {n_obs}"
        )
    label_horizon = require_int(label_horizon, "label_horizon", 0)
    embargo = require_int(embargo, "embargo", 0)
    bounds = _fold_bounds(n_obs, n_splits)
    return (
        (_training_outside(n_obs, [fold], label_horizon, embargo), np.arange(*fold, dtype=np.int64))
        for fold in bounds
    )


class CombinatorialPurgedCV:
    """Combinatorial purged cross-validation (López de Prado 2018, AFML ch. 12).

    The positions are cut into ``n_folds`` contiguous folds (as in :func:`purged_kfold`). Each of
    the ``C(n_folds, n_test_folds)`` splits tests on one combination of ``n_test_folds`` folds,
    in ``itertools.combinations`` order, and trains on every position outside each test fold's
    ``[start - label_horizon, end + embargo)``.

    Every fold is tested in ``C(n_folds - 1, n_test_folds - 1)`` splits, so the splits' test
    forecasts can be stitched into that many complete backtest paths (AFML sec. 12.4): the
    ``j``-th split (in order) that tests fold ``f`` supplies fold ``f`` of path ``j``.

    Iterating yields ``(train_idx, test_idx)`` sorted ``int64`` arrays; iteration can be repeated.

    Attributes:
        n_obs, n_folds, n_test_folds, label_horizon, embargo: the arguments.
        fold_bounds: ``[start, end)`` of each fold.
        test_folds: ``(n_splits, n_test_folds)`` fold indices each split tests.
    """

    def __init__(
        self, n_obs: int, n_folds: int, n_test_folds: int, label_horizon: int = 0, embargo: int = 0
    ):
        self.n_folds = require_int(n_folds, "n_folds", 2)
        self.n_test_folds = require_int(n_test_folds, "n_test_folds", 1)
        if self.n_test_folds >= self.n_folds:
            raise ValueError(
                f"n_test_folds must be < n_folds={self.n_folds} so every split keeps "
                "training folds; "
                f"got {self.n_test_folds}"
            )
        self.n_obs = require_int(n_obs, "n_obs", 1)
        if self.n_obs < self.n_folds:
            raise ValueError(
                f"n_obs must be >= n_folds={self.n_folds} so every fold is non-empty; got {n_obs}"
            )
        self.label_horizon = require_int(label_horizon, "label_horizon", 0)
        self.embargo = require_int(embargo, "embargo", 0)
        self.fold_bounds = _fold_bounds(self.n_obs, self.n_folds)
        self.test_folds = np.array(
            list(itertools.combinations(range(self.n_folds), self.n_test_folds)), dtype=np.int64
        )

    @property
    def n_splits(self) -> int:
        """``C(n_folds, n_test_folds)``."""
        return math.comb(self.n_folds, self.n_test_folds)

    @property
    def n_paths(self) -> int:
        """``C(n_folds - 1, n_test_folds - 1)`` complete backtest paths."""
        return math.comb(self.n_folds - 1, self.n_test_folds - 1)

    def __len__(self) -> int:
        return self.n_splits

    def __iter__(self) -> Iterator[Split]:
        for folds in self.test_folds:
            blocks = [self.fold_bounds[f] for f in folds]
            train = _training_outside(self.n_obs, blocks, self.label_horizon, self.embargo)
            test = np.concatenate([np.arange(*block, dtype=np.int64) for block in blocks])
            yield train, test

    def paths(self) -> np.ndarray:
        """Which split supplies each fold of each backtest path.

        Returns:
            ``(n_paths, n_folds)`` int64 array: entry ``[p, f]`` is the index (in iteration order)
            of the split whose test set provides fold ``f`` on path ``p``. The splits testing fold
            ``f`` are assigned to paths ``0, 1, ...`` in iteration order (AFML sec. 12.4).
        """
        paths = np.empty((self.n_paths, self.n_folds), dtype=np.int64)
        for fold in range(self.n_folds):
            paths[:, fold] = np.flatnonzero(np.any(self.test_folds == fold, axis=1))
        return paths

    def __repr__(self) -> str:
        return (
            f"CombinatorialPurgedCV(n_obs={self.n_obs}, n_folds={self.n_folds}, "
            f"n_test_folds={self.n_test_folds}, label_horizon={self.label_horizon}, "
            f"embargo={self.embargo})"
        )


def combinatorial_purged_cv(
    n_obs: int, n_folds: int, n_test_folds: int, label_horizon: int = 0, embargo: int = 0
) -> CombinatorialPurgedCV:
    """Combinatorial purged cross-validation splits; see :class:`CombinatorialPurgedCV`.

    Args:
        n_obs: number of positions, at least ``n_folds``.
        n_folds: number of contiguous folds ``N >= 2``.
        n_test_folds: folds per test set ``k``, ``1 <= k < N``.
        label_horizon: positions purged before each test fold, ``>= 0``.
        embargo: positions after each test fold kept out of training, ``>= 0``.

    Returns:
        An iterable of ``C(N, k)`` ``(train_idx, test_idx)`` splits with ``.n_splits``,
        ``.n_paths == C(N - 1, k - 1)`` and ``.paths()``.
    """
    return CombinatorialPurgedCV(n_obs, n_folds, n_test_folds, label_horizon, embargo)


def fresh_split(timestamps: Any, cutoff: Any, embargo: int = 0) -> Split:
    """Split one series at a cutoff: train up to it, test after it past an embargo.

    Train is every position with ``timestamp <= cutoff``; test is every position with
    ``timestamp > cutoff`` except the first ``embargo`` of them.

    Args:
        timestamps: ``(n_obs,)`` non-decreasing timestamps: datetimes (``datetime64``,
            ``pd.Timestamp``, a ``DatetimeIndex``/Series) or numbers.
        cutoff: last timestamp training may see, comparable with ``timestamps`` (a datetime,
            a date string, or a number).
        embargo: number of positions after the cutoff left out of the test set, ``>= 0``.

    Returns:
        ``(train_idx, test_idx)`` sorted ``int64`` position arrays; either may be empty.
    """
    embargo = require_int(embargo, "embargo", 0)
    index = pd.Index(timestamps)
    if index.ndim != 1:
        raise ValueError(f"timestamps must be one-dimensional; got {index.ndim} dimensions")
    if index.hasnans:
        raise ValueError("timestamps must not contain missing values")
    if not index.is_monotonic_increasing:
        raise ValueError("timestamps must be sorted in non-decreasing order")
    if isinstance(index, pd.DatetimeIndex):
        cutoff = pd.Timestamp(cutoff)
    try:
        at_or_before = np.asarray(index <= cutoff, dtype=bool)
    except TypeError as error:
        raise ValueError(
            f"cutoff {cutoff!r} cannot be compared with timestamps of dtype {index.dtype}: {error}"
        ) from None
    n_train = int(at_or_before.sum())  # sorted, so training is a prefix
    return (
        np.arange(n_train, dtype=np.int64),
        np.arange(n_train + embargo, len(index), dtype=np.int64),
    )
