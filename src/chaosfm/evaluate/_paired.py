"""Paired differences of every model against a reference model, on the windows both scored.

Windows of one asset overlap when origins are closer than the horizon (``step < horizon``), and
the differences of overlapping windows are correlated: resampling windows one by one would give
intervals too narrow. The differences are therefore averaged over blocks of consecutive windows
that together span at least one horizon, and the blocks are resampled (a non-overlapping block
bootstrap, Carlstein 1986); with ``step >= horizon`` a block is one window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.evaluate._bootstrap import bootstrap_interval, no_interval


def block_means(values: pd.Series, block: int) -> np.ndarray:
    """Means of ``block`` consecutive values within each asset (the index's first level), in
    origin order; a shorter last block of an asset is kept."""
    means = []
    for _, part in values.groupby(level=0, sort=False):
        array = part.sort_index().to_numpy(np.float64)
        means.extend(array[i : i + block].mean() for i in range(0, len(array), block))
    return np.asarray(means)


def paired_differences(
    scores: pd.DataFrame,
    models: list[str],
    reference: str,
    metrics: list[str],
    *,
    window_class: str = "fresh",
    block: int = 1,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: Any = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{MODEL: {METRIC: {"value", "ci_low", "ci_high", "n_windows"}}}``: mean of ``MODEL - reference``.

    Args:
        scores: per-window scores (``Results.scores``).
        models: the models to compare (the reference itself is left out).
        reference: the model every other is compared with.
        metrics: the scores compared.
        window_class: the class of the windows compared.
        block: consecutive windows averaged per resampled block (see the module docstring).
        n_resamples, confidence, seed: of the bootstrap.

    Returns:
        An empty mapping when ``reference`` scored no window of the class; a model's entry has
        None bounds when fewer than two blocks are shared.
    """
    part = scores[scores["window_class"] == window_class]
    if not (part["model"] == reference).any():
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        if model == reference:
            continue
        out[model] = {}
        for index, metric in enumerate(metrics):
            table = part.pivot(index=["asset", "origin"], columns="model", values=metric)
            if model not in table.columns:
                out[model][metric] = {**no_interval(), "n_windows": 0}
                continue
            pair = table[[model, reference]].astype(np.float64).replace([np.inf, -np.inf], np.nan).dropna()
            difference = pair[model] - pair[reference]
            entry = bootstrap_interval(
                [block_means(difference, block)], n_resamples=n_resamples, confidence=confidence, seed=[seed, index],
            )
            # The value is the mean over windows; a shorter last block weighs as much as a full one
            # in the resampling only.
            entry["value"] = float(difference.mean()) if len(difference) else None
            out[model][metric] = {**entry, "n_windows": int(len(pair))}
    return out


def overlap_block(horizon: int, step: int) -> int:
    """Windows per block so that a block spans at least one horizon: ``ceil(horizon / step)``."""
    return max(1, math.ceil(horizon / step))
