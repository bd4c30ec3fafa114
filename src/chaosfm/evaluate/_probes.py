"""Ridge probes of a frozen encoder's embeddings, scored per window class.

:func:`probe_scores` takes the windows of :func:`chaosfm.forecasters.probe_windows` (one frozen
embedding and two targets per origin: the next-``horizon`` log return and its realized
volatility), fits a ridge regression (scikit-learn) per target on the windows whose every target is
at or before the probe's cutoff, and scores R² per window class (``in_sample``,
``within_pretrain``, ``fresh``, from :func:`~chaosfm.evaluate.classify_window` and the
``trained_through`` records), with a bootstrap interval of the gap ``fresh - within_pretrain``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data import DataError
from chaosfm.evaluate._bootstrap import bootstrap_interval, no_interval
from chaosfm.evaluate._protocol import CLASSES, window_class_at

__all__ = ["probe_scores"]

TARGETS = ("next_return", "realized_vol")


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = np.sum((y - y.mean()) ** 2)
    return float(1.0 - np.sum((y - pred) ** 2) / total) if total > 0 else float("nan")


def probe_scores(
    windows: pd.DataFrame,
    frame: pd.DataFrame,
    probe_cutoff: Any,
    upstream: Sequence[Mapping[str, Any] | None],
    *,
    embargo: int = 5,
    alpha: float = 1.0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Ridge probes on frozen embeddings, scored per window class.

    Args:
        windows: :func:`chaosfm.forecasters.probe_windows` of the encoder on ``frame``.
        frame: every row the windows were cut from.
        probe_cutoff: last timestamp the probes fit on; one value or a mapping per asset. A window
            is a training window when all its targets are at or before it.
        upstream: ``trained_through`` of every artifact upstream of the probes (the encoder, its
            tokenizer).
        embargo: observations after anything's training data that are not yet fresh.
        alpha: ridge penalty.

    Returns:
        ``{target: {class: {"r2", "n_windows"}, "leakage_gap": {"value", "ci_low", "ci_high"}}}``
        for ``next_return`` and ``realized_vol``.
    """
    from sklearn.linear_model import Ridge  # scikit-learn loads when a probe is fitted, not with chaosfm.evaluate

    if windows.empty:
        raise DataError("probe_scores: no window fits in the frame", rule="context length")
    windows = windows.copy()
    stamps = {str(a): p["timestamp"].to_numpy() for a, p in frame.groupby("asset", sort=False)}
    cut = probe_cutoff if isinstance(probe_cutoff, Mapping) else {a: probe_cutoff for a in stamps}
    last_target = {}
    for asset, part in frame.groupby("asset", sort=False):
        before = part.loc[part["timestamp"] <= pd.Timestamp(cut[str(asset)]), "timestamp"]
        last_target[str(asset)] = before.iloc[-1] if len(before) else None
    classes, train_mask = [], []
    for row in windows.itertuples(index=False):
        own_last = last_target[row.asset]
        own = {row.asset: own_last} if own_last is not None else {}
        classes.append(window_class_at(stamps[row.asset], row.first_target, row.asset, own, upstream, embargo))
        # The probe trains on windows whose every target is at or before its cutoff.
        train_mask.append(own_last is not None and row.last_target <= own_last)
    windows["window_class"] = classes
    x = np.stack(windows["embedding"].to_numpy())
    fit_rows = np.asarray(train_mask, dtype=bool)
    labels = windows["window_class"].to_numpy()
    out: dict[str, Any] = {}
    for index, target in enumerate(TARGETS):
        y = windows[target].to_numpy()
        pred = Ridge(alpha=alpha).fit(x[fit_rows], y[fit_rows]).predict(x)
        entry: dict[str, Any] = {}
        for window_class in CLASSES:
            rows = labels == window_class
            entry[window_class] = {
                "r2": _r2(y[rows], pred[rows]) if rows.sum() >= 2 else None,
                "n_windows": int(rows.sum()),
            }
        fresh, within = np.flatnonzero(labels == "fresh"), np.flatnonzero(labels == "within_pretrain")
        if fresh.size < 3 or within.size < 3:
            entry["leakage_gap"] = no_interval()
        else:
            # R² is not a mean of per-window values: resample window indices within each class.
            entry["leakage_gap"] = bootstrap_interval(
                (fresh, within), lambda f, w: _r2(y[f], pred[f]) - _r2(y[w], pred[w]),
                n_resamples=n_bootstrap, confidence=confidence, seed=[seed, index], vectorized=False,
            )
        out[target] = entry
    return out
