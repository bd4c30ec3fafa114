"""Scoring the long-horizon multitask head per protocol class.

The head is run once over each asset's whole history; every window that belongs to a split (its
label span inside one split, not embargoed) is classified by
:func:`~chaosfm.evaluate.classify_window` from the ``trained_through`` of the network and of the
feature scaler upstream of it (the ``chaosfm multitask`` job does both), and scored here:

- direction head: balanced accuracy (mean recall over the true classes present), accuracy and the
  3x3 confusion matrix (rows true down/flat/up, columns predicted);
- quantiles: pinball loss at 0.1 and 0.9 and the coverage of the interval between the columns
  ``0.1`` and ``0.9`` (nominal 0.8) of the
  forward log return, beside *climatology*: the training windows' own 10% and 90% quantiles;
- volatility: RMSE of the annualised forward realized volatility, beside the *persistence*
  baseline (the trailing realized volatility over the same number of rows).

Each class reports its window count and its count of non-overlapping windows (every H-th origin),
since neighbouring windows share all but one row of their labels.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._artifacts import nan_to_none
from chaosfm.data import DIRECTION_NAMES
from chaosfm.evaluate._metrics import pinball, rmse
from chaosfm.evaluate._protocol import CLASSES

__all__ = ["multitask_table", "score_multitask"]


def _class_scores(part: pd.DataFrame, horizon: int, climatology: tuple[float, float]) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix  # loaded when a head is scored

    n = len(part)
    independent = int(sum(len(g.iloc[::horizon]) for _, g in part.groupby("asset", sort=False)))
    if n == 0:
        return {"n_windows": 0, "n_nonoverlapping": 0}
    truth, guess = part["direction"].to_numpy(), part["predicted_direction"].to_numpy()
    y = part["forward_return"].to_numpy()
    quantiles = part[["0.1", "0.9"]].to_numpy().T  # (2, n)
    clim = np.broadcast_to(np.asarray(climatology)[:, None], quantiles.shape)
    loss, clim_loss = pinball(quantiles, y, (0.1, 0.9)), pinball(clim, y, (0.1, 0.9))
    with warnings.catch_warnings():  # a class the head predicts but no window has is not news
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(truth, guess))
    return {
        "n_windows": n,
        "n_nonoverlapping": independent,
        "balanced_accuracy": balanced,
        "accuracy": float(np.mean(truth == guess)),
        "confusion": confusion_matrix(truth, guess, labels=[0, 1, 2]).tolist(),
        "true_counts": {name: int(np.sum(truth == k)) for k, name in enumerate(DIRECTION_NAMES)},
        "pinball_10": float(loss[0].mean()),
        "pinball_90": float(loss[1].mean()),
        "coverage_80": float(np.mean((y >= quantiles[0]) & (y <= quantiles[1]))),
        "interval_width": float(np.mean(quantiles[1] - quantiles[0])),
        "climatology_pinball_10": float(clim_loss[0].mean()),
        "climatology_pinball_90": float(clim_loss[1].mean()),
        "climatology_coverage_80": float(np.mean((y >= climatology[0]) & (y <= climatology[1]))),
        "vol_rmse": float(rmse(part["predicted_vol"].to_numpy(), part["forward_vol"].to_numpy())),
        "persistence_vol_rmse": float(rmse(part["persistence_vol"].to_numpy(), part["forward_vol"].to_numpy())),
    }


def score_multitask(predictions: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """Per-class scores of a multitask head from its predictions (one row per window in a split:
    ``asset, split, window_class``, the labels, ``predicted_direction``, the quantiles ``0.1`` and ``0.9``,
    ``predicted_vol``, ``persistence_vol``).

    Returns:
        ``classes`` (per class, the scores of the module docstring), ``climatology_quantiles``,
        ``n_embargoed_by_protocol`` and ``split_by_class``.
    """
    train_returns = predictions.loc[predictions["split"] == "train", "forward_return"].to_numpy()
    climatology = (float(np.quantile(train_returns, 0.1)), float(np.quantile(train_returns, 0.9)))
    classes = {
        name: _class_scores(predictions[predictions["window_class"] == name], horizon, climatology)
        for name in CLASSES
    }
    agreement = pd.crosstab(predictions["split"], predictions["window_class"])
    return nan_to_none({
        "climatology_quantiles": {"0.1": climatology[0], "0.9": climatology[1]},
        "classes": classes,
        "n_embargoed_by_protocol": int(np.sum(predictions["window_class"] == "embargoed")),
        "split_by_class": {s: {c: int(v) for c, v in row.items() if v} for s, row in agreement.iterrows()},
    })


def multitask_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per protocol class: the numbers ``chaosfm multitask`` prints and writes to table.csv."""
    rows = []
    for name in CLASSES:
        entry = metrics["classes"][name]
        rows.append({
            "class": name,
            "windows": entry["n_windows"],
            "non-overlap": entry["n_nonoverlapping"],
            "bal. acc": entry.get("balanced_accuracy"),
            "acc": entry.get("accuracy"),
            "pinball .1": entry.get("pinball_10"),
            "pinball .9": entry.get("pinball_90"),
            "cover 0.1-0.9": entry.get("coverage_80"),
            "climat. cover": entry.get("climatology_coverage_80"),
            "vol RMSE": entry.get("vol_rmse"),
            "persist. RMSE": entry.get("persistence_vol_rmse"),
        })
    return pd.DataFrame(rows)
