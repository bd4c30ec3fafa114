"""The Sharpe ratio and how much to believe it: standard error, PSR, DSR and PBO.

Dimension letters: T periods (rows of returns, time first), N strategies or trials.

Units. Every Sharpe ratio that goes *into* a formula here (``benchmark_sr``,
``trial_sharpe_ratios``, ``trial_sharpe_variance``) is per period, not annualised, because the
standard-error formulas count ``T`` in periods. Only :func:`sharpe_ratio` annualises, on request.

Moments. Skewness and kurtosis are the sample's *population* (biased, ``1/T``) moments,
``skew = m3 / m2^{3/2}`` and ``kurt = m4 / m2^2`` with ``m_k = mean((r - mean(r))^k)``. Kurtosis is
*raw* (3 for a Gaussian), not excess. The Sharpe ratio itself is ``mean / std`` with ``ddof=1``.
These are the conventions of Bailey & López de Prado (2012, 2014).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from scipy import special

EULER_MASCHERONI = 0.5772156649015329


class _SampleMoments(NamedTuple):
    sharpe: np.ndarray  # per-period mean / std (ddof=1), shape (...)
    skewness: np.ndarray  # population skewness, shape (...)
    kurtosis: np.ndarray  # population raw kurtosis (Gaussian = 3), shape (...)
    n_obs: int


def _returns_array(returns: Any, name: str = "returns") -> np.ndarray:
    array = np.asarray(returns, dtype=np.float64)
    if array.ndim < 1:
        raise ValueError(f"{name} must have a leading time axis (T, ...); got a scalar")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 periods along axis 0; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be finite; got NaN or inf in an array of shape {array.shape}"
        )
    return array


def _sample_moments(returns: Any) -> _SampleMoments:
    array = _returns_array(returns)
    mean = array.mean(axis=0)
    std = array.std(axis=0, ddof=1)
    if np.any(std == 0):
        raise ValueError(
            "returns are constant (standard deviation 0), so the Sharpe ratio is undefined"
        )
    centred = array - mean
    m2 = np.mean(centred**2, axis=0)
    m3 = np.mean(centred**3, axis=0)
    m4 = np.mean(centred**4, axis=0)
    return _SampleMoments(mean / std, m3 / m2**1.5, m4 / m2**2, array.shape[0])


def _sharpe_variance_factor(moments: _SampleMoments) -> np.ndarray:
    # 1 - skew SR + (kurt - 1)/4 SR^2 >= 0 always: its discriminant skew^2 - (kurt - 1) <= 0 by
    # Pearson's inequality kurt >= 1 + skew^2, which also holds for sample moments.
    sr = moments.sharpe
    return np.maximum(1.0 - moments.skewness * sr + (moments.kurtosis - 1.0) / 4.0 * sr**2, 0.0)


def _scalar_if_0d(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


def sharpe_ratio(returns: Any, periods_per_year: float | None = None) -> float | np.ndarray:
    """Sharpe ratio ``mean(r) / std(r, ddof=1)``, annualised by ``sqrt(periods_per_year)`` if given.

    Pass excess returns (over the risk-free rate) for the textbook ratio (Sharpe 1994).

    Args:
        returns: ``(T, ...)`` per-period returns, time first; each trailing column is a series.
        periods_per_year: e.g. 252 for daily returns; ``None`` returns the per-period ratio.

    Returns:
        The Sharpe ratio, a float for 1-D input, else an array of shape ``(...)``.
    """
    if periods_per_year is not None and not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be positive; got {periods_per_year}")
    sharpe = _sample_moments(returns).sharpe
    if periods_per_year is not None:
        sharpe = sharpe * math.sqrt(periods_per_year)
    return _scalar_if_0d(sharpe)


def sharpe_standard_error(returns: Any) -> float | np.ndarray:
    """Standard error of the per-period Sharpe ratio under non-normal iid returns (Mertens 2002).

    ``SE = sqrt((1 - skew SR + (kurt - 1)/4 SR^2) / T)`` with raw kurtosis; this is Mertens'
    ``(1 + SR^2/2 - skew SR + (kurt - 3)/4 SR^2) / T`` rewritten, and reduces to Lo's (2002)
    ``sqrt((1 + SR^2/2) / T)`` for Gaussian returns. SR, skew and kurt are the sample values
    (population moments, see the module docstring).

    Args:
        returns: ``(T, ...)`` per-period returns, time first.

    Returns:
        The standard error, per period (multiply by ``sqrt(periods_per_year)`` to annualise).
    """
    moments = _sample_moments(returns)
    return _scalar_if_0d(np.sqrt(_sharpe_variance_factor(moments) / moments.n_obs))


def sharpe_confidence_interval(
    returns: Any, level: float = 0.95
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Normal-approximation confidence interval ``SR ± z SE`` for the per-period Sharpe ratio.

    Args:
        returns: ``(T, ...)`` per-period returns, time first.
        level: two-sided confidence level in ``(0, 1)``; ``z = Phi^{-1}((1 + level) / 2)``.

    Returns:
        ``(low, high)``, per period, with SE from :func:`sharpe_standard_error`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly inside (0, 1); got {level}")
    moments = _sample_moments(returns)
    standard_error = np.sqrt(_sharpe_variance_factor(moments) / moments.n_obs)
    z = special.ndtri((1 + level) / 2)
    return (
        _scalar_if_0d(moments.sharpe - z * standard_error),
        _scalar_if_0d(moments.sharpe + z * standard_error),
    )


def _probabilistic_sharpe(moments: _SampleMoments, benchmark_sr: Any) -> np.ndarray:
    factor = _sharpe_variance_factor(moments)
    excess = moments.sharpe - benchmark_sr
    with np.errstate(divide="ignore", invalid="ignore"):
        # factor == 0 only in degenerate samples (two distinct values); the edge's sign decides.
        z = np.where(
            factor > 0,
            excess * math.sqrt(moments.n_obs - 1) / np.sqrt(factor),
            np.sign(excess) * np.inf,
        )
    return special.ndtr(z)


def probabilistic_sharpe_ratio(returns: Any, benchmark_sr: float = 0.0) -> float | np.ndarray:
    """Probability that the true Sharpe ratio exceeds ``benchmark_sr`` (Bailey & López de Prado).

    ``PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2))``
    (Bailey & López de Prado 2012, "The Sharpe ratio efficient frontier", eq. 11).

    Args:
        returns: ``(T, ...)`` per-period returns, time first.
        benchmark_sr: the threshold ``SR*``, per period (not annualised).

    Returns:
        PSR in ``[0, 1]``.
    """
    if not np.all(np.isfinite(benchmark_sr)):
        raise ValueError(f"benchmark_sr must be finite; got {benchmark_sr}")
    return _scalar_if_0d(_probabilistic_sharpe(_sample_moments(returns), benchmark_sr))


def expected_maximum_sharpe_ratio(n_trials: float, trial_sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios whose true value is 0 (False Strategy).

    ``SR0 = sqrt(V) ((1 - gamma) Phi^{-1}(1 - 1/N) + gamma Phi^{-1}(1 - 1/(N e)))``, ``gamma`` the
    Euler–Mascheroni constant (Bailey & López de Prado 2014, "The deflated Sharpe ratio", eq. 2).

    Args:
        n_trials: number of (independent) trials ``N > 1``; may be a non-integer effective count.
        trial_sharpe_variance: variance ``V`` of the trials' per-period Sharpe ratios, ``>= 0``.

    Returns:
        ``SR0``, per period.
    """
    if not np.isfinite(n_trials) or n_trials <= 1:
        raise ValueError(f"n_trials must be greater than 1; got {n_trials}")
    if not np.isfinite(trial_sharpe_variance) or trial_sharpe_variance < 0:
        raise ValueError(f"trial_sharpe_variance must be non-negative; got {trial_sharpe_variance}")
    gamma = EULER_MASCHERONI
    quantile = (1 - gamma) * special.ndtri(1 - 1 / n_trials) + gamma * special.ndtri(
        1 - 1 / (n_trials * math.e)
    )
    return float(math.sqrt(trial_sharpe_variance) * quantile)


def deflated_sharpe_ratio(
    returns: Any,
    *,
    trial_sharpe_ratios: Any = None,
    n_trials: float | None = None,
    trial_sharpe_variance: float | None = None,
) -> float | np.ndarray:
    """PSR against the Sharpe ratio the best of ``n_trials`` null strategies would reach by luck.

    ``DSR = PSR(SR0)`` with ``SR0`` from :func:`expected_maximum_sharpe_ratio` (Bailey & López de
    Prado 2014, eq. 2). Give the trials in one of two ways:

    * ``trial_sharpe_ratios``: the per-period Sharpe ratios of every trial run while searching
      (including the selected one); ``V`` is their sample variance (``ddof=1``) and ``N`` their
      count, unless ``n_trials`` overrides it with an effective number of independent trials.
    * ``n_trials`` and ``trial_sharpe_variance`` directly.

    Args:
        returns: ``(T, ...)`` per-period returns of the selected strategy, time first.
        trial_sharpe_ratios: ``(N,)`` per-period Sharpe ratios of all trials.
        n_trials: number of trials ``N > 1``.
        trial_sharpe_variance: variance of the trials' per-period Sharpe ratios.

    Returns:
        DSR in ``[0, 1]``: the probability that the true Sharpe ratio is positive after accounting
        for selection among ``N`` trials.
    """
    if trial_sharpe_ratios is not None:
        if trial_sharpe_variance is not None:
            raise ValueError("pass trial_sharpe_ratios or trial_sharpe_variance, not both")
        ratios = np.asarray(trial_sharpe_ratios, dtype=np.float64)
        if ratios.ndim != 1 or ratios.shape[0] < 2 or not np.all(np.isfinite(ratios)):
            raise ValueError(
                "trial_sharpe_ratios must be a finite 1-D array of at least 2 trials; "
                f"got shape {ratios.shape}"
            )
        trial_sharpe_variance = float(ratios.var(ddof=1))
        if n_trials is None:
            n_trials = ratios.shape[0]
    elif n_trials is None or trial_sharpe_variance is None:
        raise ValueError("pass trial_sharpe_ratios, or both n_trials and trial_sharpe_variance")
    benchmark = expected_maximum_sharpe_ratio(n_trials, trial_sharpe_variance)
    return _scalar_if_0d(_probabilistic_sharpe(_sample_moments(returns), benchmark))


# --------------------------------------------------------------------------------------------------
# Probability of backtest overfitting


class BacktestOverfitting(NamedTuple):
    """Result of :func:`probability_of_backtest_overfitting`.

    Attributes:
        pbo: fraction of combinations whose in-sample winner ranks at or below the out-of-sample
            median (logit ``<= 0``).
        logits: ``(n_combinations,)`` logit ``ln(w / (1 - w))`` of the winner's relative
            out-of-sample rank ``w = rank / (N + 1)``, one per combination.
        n_combinations: ``C(n_blocks, n_blocks / 2)``.
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int


def _safe_ratio(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    # A constant column has std 0: its Sharpe is +-inf (or 0 when flat at zero), which still ranks.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / std, np.sign(mean) * np.inf)


def probability_of_backtest_overfitting(
    performance: Any,
    n_blocks: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
) -> BacktestOverfitting:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

    Bailey, Borwein, López de Prado & Zhu (2014), "The probability of backtest overfitting",
    sec. 2.2: the ``T`` rows are cut into ``n_blocks`` contiguous blocks (``np.array_split``: sizes
    differ by at most one row when ``T`` is not a multiple). For each of the
    ``C(n_blocks, n_blocks/2)`` ways to pick half the blocks as in-sample (the rest out-of-sample),
    the strategy with the best in-sample metric is found, its out-of-sample rank among the ``N``
    strategies (1 = worst, ``N`` = best, ties averaged) gives ``w = rank / (N + 1)`` and the logit
    ``ln(w / (1 - w))``. PBO is the fraction of logits ``<= 0``.

    Args:
        performance: ``(T, N)`` per-period returns of ``N >= 2`` strategy configurations.
        n_blocks: even number of blocks ``S``, ``2 <= S <= T``.
        metric: maps ``(T', N)`` returns to ``(N,)`` scores, higher is better. ``None`` uses the
            per-period Sharpe ratio (``ddof=1``), computed from per-block sums so all
            combinations are evaluated at once.

    Returns:
        A :class:`BacktestOverfitting` with ``pbo``, ``logits`` and ``n_combinations``.
    """
    matrix = np.asarray(performance, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(
            f"performance must have shape (T, N) with N >= 2 strategies; got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError("performance must be finite; got NaN or inf")
    if not isinstance(n_blocks, (int, np.integer)) or n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even integer >= 2; got {n_blocks!r}")
    n_periods, n_strategies = matrix.shape
    if n_blocks > n_periods:
        raise ValueError(f"n_blocks must be <= T = {n_periods} rows; got {n_blocks}")
    blocks = np.array_split(np.arange(n_periods), n_blocks)
    in_sample_sets = list(itertools.combinations(range(n_blocks), n_blocks // 2))
    membership = np.zeros((len(in_sample_sets), n_blocks), dtype=bool)  # (combinations, blocks)
    for row, chosen in enumerate(in_sample_sets):
        membership[row, list(chosen)] = True

    if metric is None:
        in_sample_scores, out_of_sample_scores = _sharpe_by_block_sums(matrix, blocks, membership)
    else:
        in_sample_scores = np.empty((len(in_sample_sets), n_strategies))
        out_of_sample_scores = np.empty_like(in_sample_scores)
        for row, mask in enumerate(membership):
            in_rows = np.concatenate([blocks[b] for b in np.flatnonzero(mask)])
            out_rows = np.concatenate([blocks[b] for b in np.flatnonzero(~mask)])
            in_sample_scores[row] = _check_metric_output(metric(matrix[in_rows]), n_strategies)
            out_of_sample_scores[row] = _check_metric_output(metric(matrix[out_rows]), n_strategies)

    winners = np.argmax(in_sample_scores, axis=1)
    from scipy.stats import rankdata  # scipy.stats takes ~0.7 s to import: only here

    oos_ranks = rankdata(out_of_sample_scores, axis=1)  # 1 = worst, N = best
    winner_rank = oos_ranks[np.arange(len(winners)), winners]
    relative_rank = winner_rank / (n_strategies + 1)
    logits = special.logit(relative_rank)
    return BacktestOverfitting(float(np.mean(logits <= 0)), logits, len(in_sample_sets))


def _check_metric_output(scores: Any, n_strategies: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n_strategies,):
        raise ValueError(
            f"metric must return shape ({n_strategies},), one score per strategy; "
            f"got {scores.shape}"
        )
    if np.any(np.isnan(scores)):
        raise ValueError("metric returned NaN")
    return scores


def _sharpe_by_block_sums(
    matrix: np.ndarray, blocks: list[np.ndarray], membership: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """In- and out-of-sample per-period Sharpe ratios ``(combinations, N)`` of every combination."""
    counts = np.array([len(block) for block in blocks], dtype=np.float64)  # (blocks,)
    # Centre first so the sum-of-squares identity below does not cancel catastrophically.
    offset = matrix.mean(axis=0)
    centred = matrix - offset
    sums = np.stack([centred[block].sum(axis=0) for block in blocks])  # (blocks, N)
    squares = np.stack([(centred[block] ** 2).sum(axis=0) for block in blocks])  # (blocks, N)

    def sharpe_of(mask: np.ndarray) -> np.ndarray:
        n = mask @ counts  # (combinations,)
        if np.any(n < 2):
            raise ValueError(
                "each half needs at least 2 rows for a Sharpe ratio; use fewer n_blocks"
            )
        total = mask @ sums  # (combinations, N)
        total_sq = mask @ squares
        mean_centred = total / n[:, None]
        variance = np.maximum(total_sq - n[:, None] * mean_centred**2, 0.0) / (n[:, None] - 1)
        return _safe_ratio(mean_centred + offset, np.sqrt(variance))

    membership = membership.astype(np.float64)
    return sharpe_of(membership), sharpe_of(1.0 - membership)
