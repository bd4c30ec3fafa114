"""The one bootstrap: a percentile confidence interval for every gap and paired difference.

Leakage gaps (``fresh - within_pretrain``, two independent samples), paired differences between
models on the same windows (one sample of differences) and gaps of a statistic that is not a mean
(a probe's R² per class, resampling window indices) all go through :func:`bootstrap_interval`,
which wraps ``scipy.stats.bootstrap`` (percentile method).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_interval", "mean_difference", "no_interval"]


def no_interval() -> dict[str, float | None]:
    """What a gap reads when there are too few windows to measure it: null, never a guess."""
    return {"value": None, "ci_low": None, "ci_high": None}


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """``mean(a) - mean(b)``, vectorised over resamples (the statistic of a leakage gap)."""
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def bootstrap_interval(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., Any] = np.mean,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | Sequence[int] = 0,
    vectorized: bool = True,
    min_size: int = 2,
) -> dict[str, float | None]:
    """``{"value", "ci_low", "ci_high"}``: the statistic of ``samples`` and its percentile interval.

    Each sample is resampled with replacement on its own (independent samples; for paired data
    pass one sample of per-pair differences, or of indices).

    Args:
        samples: one or more 1-D arrays.
        statistic: ``statistic(*samples[, axis]) -> float``; with ``vectorized`` it takes ``axis``.
        n_resamples: bootstrap resamples.
        confidence: the interval's level.
        seed: seeds ``numpy.random.default_rng`` (an int or a sequence, e.g. ``[seed, index]``).
        vectorized: whether ``statistic`` accepts ``axis`` and batches of resamples.
        min_size: below this many values in any sample, no interval (:func:`no_interval`).

    Resamples whose statistic is NaN (a degenerate draw, e.g. R² of a constant resample) are left
    out of the percentile interval when the statistic of the data itself is defined.
    """
    arrays = [np.asarray(s) for s in samples]
    if any(a.size < min_size for a in arrays):
        return no_interval()
    from scipy import stats  # ~0.7 s to import: loaded when an interval is first asked for

    value = float(statistic(*arrays, axis=-1) if vectorized else statistic(*arrays))
    with warnings.catch_warnings():
        # A degenerate resample (e.g. R² of a class drawn as one repeated window) is handled below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(arrays),
            statistic,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=vectorized,
            rng=np.random.default_rng(seed),
        )
    low, high = (float(x) for x in result.confidence_interval)
    draws = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    if np.isfinite(value) and not (np.isfinite(low) and np.isfinite(high)) and np.isfinite(draws).any():
        # The data's statistic is defined but some resamples' are not (NaN): the interval is the
        # percentile interval of the resamples where it is defined, never NaN because of a few.
        low, high = (float(x) for x in np.nanquantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2]))
    return {"value": value, "ci_low": low, "ci_high": high}
