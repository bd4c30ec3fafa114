"""Health numbers of a fitted tokenizer: is the codebook used, and does decoding give the data back?

- ``codebook_usage``: fraction of the data codes (special tokens excluded) that occur at least
  once, on the training rows and on held-out rows.
- ``perplexity``: ``exp(H)`` of the empirical code distribution, ``H = -sum p log p`` in nats;
  equals the number of codes when all are equally used.
- ``dead_codes``: data codes never used on the training rows.
- ``reconstruction``: per value (feature or channel), the RMSE of ``decode(encode(x))`` against
  ``x`` in the value's own units, beside the RMSE of predicting the training mean (and their ratio:
  below 1 the codes carry information, below 0.5 they carry most of it).
- ``encode_candles_per_second``: rows encoded per second after compilation, from a frame (features
  computed by pandas included) and from prepared arrays (``encode_series``, the model alone);
  median of ``repeats`` timed runs.

Held-out rows are encoded as their own frame: nothing from the training rows (which the tokenizer
saw) leaks into their codes, and vice versa.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.tokenizers._base import AbstractTokenizer


def code_counts(codes: Any, vocab_size: int) -> np.ndarray:
    """How often each code ``0 .. vocab_size - 1`` occurs in ``codes`` (any shape)."""
    return np.bincount(np.asarray(codes, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size]


def codebook_usage(counts: np.ndarray, special_tokens: int = 0) -> float:
    """Fraction of data codes (indices ``>= special_tokens``) with a nonzero count."""
    data = np.asarray(counts)[special_tokens:]
    return float(np.mean(data > 0))


def perplexity(counts: np.ndarray) -> float:
    """``exp`` of the entropy (nats) of the code distribution given by ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def reconstruction_errors(
    truth: pd.DataFrame, reconstruction: pd.DataFrame, train_mean: pd.Series, names: tuple[str, ...]
) -> dict[str, dict[str, float | None]]:
    """Per value: RMSE of the reconstruction and of the training-mean predictor, and their ratio.

    Rows where either frame is NaN (feature warm-up, a trailing incomplete patch) are skipped.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        x = truth[name].to_numpy(dtype=np.float64)
        y = reconstruction[name].to_numpy(dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if not keep.any():
            out[name] = {"rmse": None, "mean_predictor_rmse": None, "ratio": None, "rows": 0}
            continue
        rmse = float(np.sqrt(np.mean((y[keep] - x[keep]) ** 2)))
        baseline = float(np.sqrt(np.mean((float(train_mean[name]) - x[keep]) ** 2)))
        ratio = rmse / baseline if baseline > 0 else None
        out[name] = {"rmse": rmse, "mean_predictor_rmse": baseline, "ratio": ratio, "rows": int(keep.sum())}
    return out


def encode_throughput(tokenizer: AbstractTokenizer, frame: pd.DataFrame, repeats: int = 5) -> dict[str, float]:
    """Rows of ``frame`` encoded per second after a warm-up call (compilation), median of ``repeats``.

    Returns:
        ``from_frame``: ``tokenizer.encode(frame)``, pandas features included;
        ``from_series``: ``encode_series`` on each asset's prepared values, the model alone.
    """
    rows = len(frame)
    prepared = [values for _, _, values in tokenizer.series(frame)]
    tokenizer.encode(frame)  # compile every shape the timed runs use
    from_frame, from_series = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        tokenizer.encode(frame)
        from_frame.append(time.perf_counter() - started)
        started = time.perf_counter()
        for values in prepared:
            tokenizer.encode_series(values)
        from_series.append(time.perf_counter() - started)
    return {
        "from_frame": rows / float(np.median(from_frame)),
        "from_series": rows / float(np.median(from_series)),
    }


def encodable(tokenizer: AbstractTokenizer, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` without the assets too short to encode (fewer rows than the receptive field),
    and those assets with their row counts."""
    minimum = getattr(tokenizer, "receptive_field", 1)
    sizes = frame.groupby("asset", sort=False).size()
    short = sizes[sizes < minimum]
    if not len(short):
        return frame, {}
    kept = frame.loc[~frame["asset"].isin(short.index)].reset_index(drop=True)
    return kept, {str(a): int(n) for a, n in short.items()}


def _split_stats(tokenizer: AbstractTokenizer, frame: pd.DataFrame) -> tuple[np.ndarray, int]:
    counts = code_counts(tokenizer.tokens(frame)["code"].to_numpy(), tokenizer.vocab_size)
    return counts, int(counts.sum())


def tokenizer_health(
    tokenizer: AbstractTokenizer,
    train: pd.DataFrame,
    held_out: pd.DataFrame | None,
    *,
    speed_frame: pd.DataFrame | None = None,
    repeats: int = 5,
) -> dict[str, Any]:
    """Every health number of a fitted tokenizer (see the module docstring).

    Args:
        tokenizer: fitted on ``train``.
        train: the rows it was fitted on.
        held_out: rows after the cutoff, or None (held-out numbers are then None). Assets with
            fewer rows than the receptive field are left out and listed in ``held_out_skipped``.
        speed_frame: rows to time encoding on (default: ``train`` and ``held_out`` together).
        repeats: timed encoding runs.
    """
    tokenizer.require_fitted("health")
    special = tokenizer.special_tokens
    usable = tokenizer.vocab_size - special
    train_counts, train_codes = _split_stats(tokenizer, train)
    truth_train = tokenizer.targets(train)
    names = tokenizer.value_names
    train_mean = truth_train[list(names)].mean()
    metrics: dict[str, Any] = {
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "special_tokens": special,
        "codes": {"train": train_codes, "held_out": None},
        "codebook_usage": {"train": codebook_usage(train_counts, special), "held_out": None},
        "perplexity": {"train": perplexity(train_counts), "held_out": None},
        "dead_codes": int(usable - np.count_nonzero(train_counts[special:])),
        "reconstruction": {
            "train": reconstruction_errors(truth_train, tokenizer.reconstruct(train), train_mean, names),
            "held_out": None,
        },
    }
    if held_out is not None and len(held_out):
        held_out, skipped = encodable(tokenizer, held_out)
        if skipped:
            metrics["held_out_skipped"] = skipped  # asset -> rows, too few to encode
    if held_out is not None and len(held_out):
        held_counts, held_codes = _split_stats(tokenizer, held_out)
        metrics["codes"]["held_out"] = held_codes
        metrics["codebook_usage"]["held_out"] = codebook_usage(held_counts, special)
        metrics["perplexity"]["held_out"] = perplexity(held_counts)
        metrics["reconstruction"]["held_out"] = reconstruction_errors(
            tokenizer.targets(held_out), tokenizer.reconstruct(held_out), train_mean, names
        )
    else:
        held_counts = np.zeros_like(train_counts)
    restarts = getattr(tokenizer, "restarts_done", None)
    if restarts is not None:
        metrics["restarts_done"] = restarts
    if speed_frame is None:
        speed_frame = train if held_out is None or not len(held_out) else pd.concat(
            [train, held_out], ignore_index=True
        ).sort_values(["asset", "timestamp"], kind="stable", ignore_index=True)
    speed = encode_throughput(tokenizer, speed_frame, repeats)
    metrics["encode_candles_per_second"] = speed["from_frame"]
    metrics["encode_candles_per_second_series"] = speed["from_series"]
    metrics["speed_rows"] = len(speed_frame)
    metrics["code_counts"] = {"train": train_counts.tolist(), "held_out": held_counts.tolist()}
    return metrics


def health_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The health numbers as rows ``quantity, train, held_out, all`` for printing."""

    def fmt(value: Any) -> Any:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return None
        return value

    def row(quantity: str, train: Any = None, held_out: Any = None, every: Any = None) -> dict[str, Any]:
        return {"quantity": quantity, "train": fmt(train), "held_out": fmt(held_out), "all": fmt(every)}

    rows = [
        row("vocab_size", every=metrics["vocab_size"]),
        row("codes", metrics["codes"]["train"], metrics["codes"]["held_out"]),
        row("codebook_usage", metrics["codebook_usage"]["train"], metrics["codebook_usage"]["held_out"]),
        row("perplexity", metrics["perplexity"]["train"], metrics["perplexity"]["held_out"]),
        row("dead_codes", metrics["dead_codes"]),
    ]
    if "restarts_done" in metrics:
        rows.append(row("restarts_done", metrics["restarts_done"]))
    held = metrics["reconstruction"].get("held_out") or {}
    for name, train_entry in metrics["reconstruction"]["train"].items():
        rows.append(row(f"rmse / mean-predictor rmse: {name}", train_entry.get("ratio"),
                        held.get(name, {}).get("ratio")))
    rows.append(row("encode rows/s from a frame", every=metrics.get("encode_candles_per_second")))
    rows.append(row("encode rows/s, model only", every=metrics.get("encode_candles_per_second_series")))
    return pd.DataFrame(rows, columns=["quantity", "train", "held_out", "all"])
