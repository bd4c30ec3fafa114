"""Token analysis: how a fitted tokenizer's codes are spread, which code patterns precede which
moves, and which codes are rare — pure functions over code arrays and frames.

- :func:`code_distribution`: top-k coverage (share of codes taken by the ``k`` most frequent),
  entropy in bits, perplexity ``2**H`` and codebook usage of one array of codes.
- :func:`forward_returns`: the move over the next ``horizon`` rows after each row,
  ``log(v[t + h] / v[t])`` (or ``v[t + h] - v[t]`` for a series that is not positive).
- :func:`ngram_counts`: how often each run of ``n`` consecutive codes occurs, per stream.
- :func:`pattern_stats`: for every code pattern (``n = 1 .. max_n``) the forward-move statistics
  (mean, std, hit rate of up moves, count, t-statistic) on the training rows and on fresh rows
  separately. Patterns are ranked by the training t-statistic, so a pattern's edge is found where
  the tokenizer was fitted and checked where nothing upstream looked.
- :func:`rare_codes` and :func:`code_values`: codes whose share is below ``1 / (factor * V)``
  and the values they decode to where they occur.

A stream is one asset's (one channel's) codes in time order; ``T`` is its length. Which rows are
training rows and which are fresh is decided by the caller (the job, through the leakage
protocol) and handed in as two boolean masks of :class:`CodeStream`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from chaosfm.data import DataError
from chaosfm.tokenizers._health import code_counts, codebook_usage

__all__ = [
    "CodeStream",
    "code_distribution",
    "code_values",
    "forward_returns",
    "ngram_counts",
    "pattern_stats",
    "rare_codes",
    "return_stats",
]


class CodeStream(NamedTuple):
    """One stream of codes and what follows each code.

    Attributes:
        codes: ``(T,)`` int codes in time order.
        forward: ``(T,)`` the move over the ``horizon`` rows after each code's last row (NaN where
            the series ends first).
        train_end: ``(T,)`` bool, the code's rows and its forward rows all lie at or before the
            tokenizer's ``trained_through``.
        fresh_start: ``(T,)`` bool, the code's first row is fresh (after ``trained_through`` and
            the embargo).
    """

    codes: np.ndarray
    forward: np.ndarray
    train_end: np.ndarray
    fresh_start: np.ndarray


def code_distribution(codes: Any, vocab_size: int, special_tokens: int = 0, top_k: int = 20) -> dict[str, Any]:
    """Spread of ``codes`` over the vocabulary.

    Returns:
        ``codes`` (how many), ``top_k``, ``top_k_coverage`` (share of codes that are one of the
        ``top_k`` most frequent), ``entropy_bits`` (``-sum p log2 p``), ``perplexity``
        (``2 ** entropy_bits``), ``codebook_usage`` (share of data codes used at least once),
        ``used_codes``.
    """
    if top_k < 1:
        raise DataError(f"top_k must be >= 1, got {top_k}", rule="top_k >= 1")
    counts = code_counts(codes, vocab_size).astype(np.float64)
    total = counts.sum()
    if total == 0:
        raise DataError("code_distribution: no codes to analyse", rule="at least one code")
    p = counts[counts > 0] / total
    entropy = float(-np.sum(p * np.log2(p)))
    top = np.sort(counts)[::-1][:top_k]
    return {
        "codes": int(total),
        "top_k": int(top_k),
        "top_k_coverage": float(top.sum() / total),
        "entropy_bits": entropy,
        "perplexity": float(2.0**entropy),
        "codebook_usage": codebook_usage(counts, special_tokens),
        "used_codes": int(np.count_nonzero(counts[special_tokens:])),
    }


def forward_returns(values: Any, horizon: int, log: bool = True) -> np.ndarray:
    """``(T,)`` move from each row to the row ``horizon`` later; NaN for the last ``horizon`` rows.

    Args:
        values: ``(T,)`` one series in time order (a close, a channel).
        horizon: rows ahead, >= 1.
        log: ``log(v[t + h] / v[t])`` (needs positive values); else ``v[t + h] - v[t]``.
    """
    if horizon < 1:
        raise DataError(f"horizon must be >= 1, got {horizon}", rule="horizon >= 1")
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if len(x) <= horizon:
        return out
    if log:
        if np.any(x <= 0):
            raise DataError("forward log-returns need positive values", rule="positive values")
        out[:-horizon] = np.log(x[horizon:] / x[:-horizon])
    else:
        out[:-horizon] = x[horizon:] - x[:-horizon]
    return out


def _windows(codes: np.ndarray, n: int) -> np.ndarray:
    """``(T - n + 1, n)`` runs of ``n`` consecutive codes (empty when ``T < n``)."""
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) < n:
        return np.empty((0, n), dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(codes, n)


def ngram_counts(streams: Sequence[Any], n: int) -> Counter:
    """How often each run of ``n`` consecutive codes occurs; runs never cross from one stream to
    the next. Keys are tuples of ``n`` ints."""
    if n < 1:
        raise DataError(f"n-gram length must be >= 1, got {n}", rule="n >= 1")
    out: Counter = Counter()
    for codes in streams:
        windows = _windows(codes, n)
        if not len(windows):
            continue
        unique, counts = np.unique(windows, axis=0, return_counts=True)
        out.update({tuple(int(c) for c in row): int(k) for row, k in zip(unique, counts)})
    return out


def return_stats(returns: Any) -> dict[str, float | int | None]:
    """``count``, ``mean``, ``std`` (ddof 1), ``hit_rate`` (share > 0) and ``t`` (``mean / (std /
    sqrt(count))``) of the finite values of ``returns``; None where undefined."""
    x = np.asarray(returns, dtype=np.float64)
    x = x[np.isfinite(x)]
    count = len(x)
    if count == 0:
        return {"count": 0, "mean": None, "std": None, "hit_rate": None, "t": None}
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if count > 1 else None
    t = mean / (std / np.sqrt(count)) if std else None
    return {"count": count, "mean": mean, "std": std, "hit_rate": float(np.mean(x > 0)), "t": t}


def _pattern_name(codes: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in codes)


def pattern_stats(
    streams: Sequence[CodeStream],
    max_n: int = 3,
    *,
    top_k: int = 20,
    min_count: int = 10,
    interval: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Forward-move statistics after each code pattern, on training and on fresh rows.

    An occurrence of a pattern at codes ``i .. i + n - 1`` is followed by ``forward[i + n - 1]``.
    It is a training occurrence when ``train_end[i + n - 1]`` (every row it and its move cover was
    seen in fitting), a fresh one when ``fresh_start[i]``; other occurrences (straddling the
    cutoff, or in the embargo) count only in ``count``.

    Args:
        streams: the code streams.
        max_n: patterns of ``n = 1 .. max_n`` codes.
        top_k: patterns kept per ``n``: those with at least ``min_count`` training occurrences, by
            ``|train_t|`` descending (ties: more training occurrences first).
        min_count: training occurrences a pattern needs to be ranked.
        interval: ``fresh returns -> {"ci_low", "ci_high", ...}`` (e.g. a bootstrap interval of
            the mean); None leaves the interval columns empty.

    Returns:
        One row per kept pattern: ``n, rank, pattern, count``, then ``train_*`` and ``fresh_*``
        for ``count, mean, std, hit_rate, t`` and ``fresh_ci_low, fresh_ci_high``.
    """
    if max_n < 1:
        raise DataError(f"max_n must be >= 1, got {max_n}", rule="n >= 1")
    if top_k < 1 or min_count < 1:
        raise DataError(f"top_k and min_count must be >= 1, got {top_k}, {min_count}", rule=">= 1")
    fields = ("count", "mean", "std", "hit_rate", "t")
    columns = ["n", "rank", "pattern", "count", *[f"train_{f}" for f in fields],
               *[f"fresh_{f}" for f in fields], "fresh_ci_low", "fresh_ci_high"]
    rows = []
    for n in range(1, max_n + 1):
        parts = []
        for stream in streams:
            windows = _windows(stream.codes, n)
            if not len(windows):
                continue
            last = np.arange(n - 1, len(stream.codes))
            split = np.where(np.asarray(stream.train_end, bool)[last], 1,
                             np.where(np.asarray(stream.fresh_start, bool)[: len(last)], 2, 0))
            parts.append((windows, np.asarray(stream.forward, np.float64)[last], split))
        if not parts:
            continue
        windows = np.concatenate([p[0] for p in parts])
        forward = np.concatenate([p[1] for p in parts])
        split = np.concatenate([p[2] for p in parts])
        unique, inverse, total = np.unique(windows, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        frame = pd.DataFrame({"id": inverse, "forward": forward, "split": split})
        frame = frame.loc[np.isfinite(forward)]
        train = frame.loc[frame["split"] == 1].groupby("id")["forward"]
        stats = pd.DataFrame({"count": train.count(), "mean": train.mean(), "std": train.std(ddof=1)})
        stats = stats.loc[stats["count"] >= min_count]
        stats["t"] = stats["mean"] / (stats["std"] / np.sqrt(stats["count"]))
        stats["abs_t"] = stats["t"].abs().fillna(-1.0)
        stats = stats.sort_values(["abs_t", "count"], ascending=[False, False], kind="stable").head(top_k)
        by_id = {key: group["forward"].to_numpy() for key, group in frame.groupby("id")}
        split_of = {key: group["split"].to_numpy() for key, group in frame.groupby("id")}
        for rank, pattern_id in enumerate(stats.index, start=1):
            values, where = by_id[pattern_id], split_of[pattern_id]
            train_stats = return_stats(values[where == 1])
            fresh_values = values[where == 2]
            fresh_stats = return_stats(fresh_values)
            ci = interval(fresh_values) if interval is not None and len(fresh_values) >= 2 else {}
            rows.append({
                "n": n,
                "rank": rank,
                "pattern": _pattern_name(unique[pattern_id]),
                "count": int(total[pattern_id]),
                **{f"train_{f}": train_stats[f] for f in fields},
                **{f"fresh_{f}": fresh_stats[f] for f in fields},
                "fresh_ci_low": ci.get("ci_low"),
                "fresh_ci_high": ci.get("ci_high"),
            })
    return pd.DataFrame(rows, columns=columns)


def rare_codes(counts: Any, special_tokens: int = 0, factor: float = 10.0) -> pd.DataFrame:
    """Codes that occur but take less than ``1 / (factor * V)`` of all codes (``V`` data codes).

    Returns:
        ``code, count, share`` by count ascending (then code).
    """
    counts = np.asarray(counts, dtype=np.int64)
    data = counts[special_tokens:]
    total = int(data.sum())
    if total == 0 or len(data) == 0:
        return pd.DataFrame({"code": [], "count": [], "share": []})
    threshold = 1.0 / (factor * len(data))
    share = data / total
    picked = np.flatnonzero((data > 0) & (share < threshold))
    out = pd.DataFrame({"code": picked + special_tokens, "count": data[picked], "share": share[picked]})
    return out.sort_values(["count", "code"], kind="stable", ignore_index=True)


def code_values(codes: Any, decoded: pd.DataFrame, truth: pd.DataFrame, wanted: Sequence[int]) -> pd.DataFrame:
    """For each code of ``wanted``: the mean decoded values and mean true values of the rows where
    it occurs.

    Args:
        codes: ``(R,)`` the code of each row (row ``r`` of ``decoded`` and ``truth``).
        decoded: ``(R, values)`` what decoding the codes gives at each row.
        truth: ``(R, values)`` the true values at each row, same columns.
        wanted: the codes to describe.

    Returns:
        ``code, rows`` then ``decoded_<name>`` and ``true_<name>`` per value column.
    """
    codes = np.asarray(codes)
    if len(codes) != len(decoded) or len(codes) != len(truth):
        raise DataError(f"code_values: {len(codes)} codes for {len(decoded)} decoded and {len(truth)} true rows",
                        rule="one code per row")
    names = list(decoded.columns)
    rows = []
    for code in wanted:
        where = codes == code
        row: dict[str, Any] = {"code": int(code), "rows": int(where.sum())}
        for name in names:
            row[f"decoded_{name}"] = _finite_mean(decoded[name].to_numpy(np.float64)[where])
            row[f"true_{name}"] = _finite_mean(truth[name].to_numpy(np.float64)[where])
        rows.append(row)
    return pd.DataFrame(rows, columns=["code", "rows", *[f"{p}_{n}" for n in names for p in ("decoded", "true")]])


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None
