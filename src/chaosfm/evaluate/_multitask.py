"""Scoring the long-horizon multitask head per protocol class, and the job that trains then scores it.

The network of :func:`chaosfm.train.train_multitask` is run once over each asset's whole history;
every window that belongs to a split (its label span inside one split, not embargoed) is then
classified by :func:`~chaosfm.evaluate.classify_window` from the ``trained_through`` of the network
and of the feature scaler upstream of it, and scored:

- direction head: balanced accuracy (mean recall over the true classes present), accuracy and the
  3x3 confusion matrix (rows true down/flat/up, columns predicted);
- quantiles: pinball loss at 0.1 and 0.9 and the coverage of ``[p10, p90]`` (nominal 0.8) of the
  forward log return, beside *climatology*: the training windows' own 10% and 90% quantiles;
- volatility: RMSE of the annualised forward realized volatility, beside the *persistence*
  baseline (the trailing realized volatility over the same number of rows).

Each class reports its window count and its count of non-overlapping windows (every H-th origin),
since neighbouring windows share all but one row of their labels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from chaosfm._artifacts import atomic_write_text, nan_to_none, write_json
from chaosfm.data import DIRECTION_NAMES, feature_warmup, trained_through_from_json
from chaosfm.data._labels import EMBARGOED, PURGED, UNLABELLED, WARMUP
from chaosfm.evaluate._metrics import pinball, rmse
from chaosfm.evaluate._protocol import CLASSES, classify_window

__all__ = ["multitask_table", "run_multitask", "score_multitask"]

_SPLIT_NAMES = ("train", "validation", "test")


def _predictions(trained: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per window in a split: origin, class, labels, predictions, baselines."""
    from chaosfm.train import predict_history

    model, data, config = trained.model, trained.data, trained.config
    own = data.trained_through
    upstream = [trained_through_from_json(data.scaler["trained_through"])]
    eval_length = config.train.eval_segment or config.segment_length
    targets = data.targets
    rows, dropped = [], {"purged": 0, "embargoed": 0, "unlabelled": 0, "warmup": 0}
    codes = {PURGED: "purged", EMBARGOED: "embargoed", UNLABELLED: "unlabelled", WARMUP: "warmup"}
    warmup = feature_warmup()
    for asset, features in data.features.items():
        # From the first complete feature row on, as in training; origins are never before it.
        history = predict_history(model, features[warmup:], eval_length)
        output = type(history)(*(np.concatenate([np.full((warmup, *x.shape[1:]), np.nan), x]) for x in history))
        split, stamps, labels = data.split[asset], data.timestamps[asset], data.labels[asset]
        for code, name in codes.items():
            dropped[name] += int(np.sum(split == code))
        origins = np.flatnonzero(split >= 0)
        seen = max(own[asset], upstream[0][asset])
        logits = output.direction_logits[origins]
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        quantiles = output.quantiles[origins] * targets["return_std"] + targets["return_mean"]
        vol = output.vol[origins] * targets["vol_std"] + targets["vol_mean"]
        for i, t in enumerate(origins):
            first_target = stamps[t + 1]
            after = int(np.sum((stamps > np.asarray(seen, dtype=stamps.dtype)) & (stamps < first_target)))
            window_class = classify_window(
                _scalar(first_target), asset, after, own, upstream, config.embargo
            )
            rows.append({
                "asset": asset,
                "origin": stamps[t],
                "first_target": first_target,
                "split": _SPLIT_NAMES[split[t]],
                "window_class": window_class,
                "direction": int(labels["direction"].iloc[t]),
                "predicted_direction": int(np.argmax(logits[i])),
                **{f"p_{name}": float(p) for name, p in zip(DIRECTION_NAMES, probabilities[i])},
                "forward_return": float(labels["forward_return"].iloc[t]),
                "p10": float(quantiles[i, 0]),
                "p90": float(quantiles[i, 1]),
                "forward_vol": float(labels["forward_vol"].iloc[t]),
                "predicted_vol": float(vol[i]),
                "persistence_vol": float(data.persistence[asset][t]),
            })
    return pd.DataFrame(rows), dropped


def _scalar(value: Any) -> Any:
    return pd.Timestamp(value) if isinstance(value, np.datetime64) else value


def _class_scores(part: pd.DataFrame, horizon: int, climatology: tuple[float, float]) -> dict[str, Any]:
    n = len(part)
    independent = int(sum(len(g.iloc[::horizon]) for _, g in part.groupby("asset", sort=False)))
    if n == 0:
        return {"n_windows": 0, "n_nonoverlapping": 0}
    truth, guess = part["direction"].to_numpy(), part["predicted_direction"].to_numpy()
    y = part["forward_return"].to_numpy()
    quantiles = part[["p10", "p90"]].to_numpy().T  # (2, n)
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


def score_multitask(trained: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per-class scores of a trained multitask head (a :class:`~chaosfm.train.MultitaskTrained`).

    Returns:
        ``(metrics, predictions)``: ``metrics["classes"][CLASS]`` holds the scores of
        :func:`_class_scores` (module docstring); ``predictions`` one row per scored window.
    """
    config = trained.config
    predictions, dropped = _predictions(trained)
    train_returns = predictions.loc[predictions["split"] == "train", "forward_return"].to_numpy()
    climatology = (float(np.quantile(train_returns, 0.1)), float(np.quantile(train_returns, 0.9)))
    classes = {
        name: _class_scores(predictions[predictions["window_class"] == name], config.horizon, climatology)
        for name in CLASSES
    }
    agreement = pd.crosstab(predictions["split"], predictions["window_class"])
    metrics = {
        "dataset": config.data,
        "horizon": config.horizon,
        "threshold": config.threshold,
        "vol_horizon": config.vol_horizon,
        "embargo": config.embargo,
        "boundaries": {
            asset: {"train_end": str(trained.data.timestamps[asset][a]), "cutoff": str(trained.data.timestamps[asset][b])}
            for asset, (a, b) in trained.data.boundaries.items()
        },
        "climatology_quantiles": {"p10": climatology[0], "p90": climatology[1]},
        "classes": classes,
        "n_embargoed_by_protocol": int(np.sum(predictions["window_class"] == "embargoed")),
        "dropped_windows": dropped,
        "split_by_class": {s: {c: int(v) for c, v in row.items() if v} for s, row in agreement.iterrows()},
    }
    return nan_to_none(metrics), predictions


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
            "cover p10-p90": entry.get("coverage_80"),
            "climat. cover": entry.get("climatology_coverage_80"),
            "vol RMSE": entry.get("vol_rmse"),
            "persist. RMSE": entry.get("persistence_vol_rmse"),
        })
    return pd.DataFrame(rows)


def run_multitask(
    config: Any,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    frame: pd.DataFrame | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """``chaosfm multitask``: train the head (:func:`chaosfm.train.train_multitask`), score it per
    protocol class, and add ``metrics.json``, ``predictions.csv`` and ``table.csv`` to the run folder.

    Args:
        config: a :class:`~chaosfm.train.MultitaskRunConfig`.
        out_dir: the run folder.
        resume: continue training from the folder's last checkpoint.
        frame: the data (default: ``load(config.data)``).
        on_step: the training loop's per-step hook.

    Returns:
        The content of ``metrics.json`` (per-class scores under ``classes``).
    """
    from chaosfm.models import count_params
    from chaosfm.train import train_multitask
    from chaosfm.train._multitask import write_multitask_meta

    trained = train_multitask(config, out_dir, resume=resume, frame=frame, on_step=on_step)
    metrics, predictions = score_multitask(trained)
    log_vars = np.asarray(trained.model.log_vars)
    history = trained.result.history
    metrics.update({
        "params": count_params(trained.model),
        "steps": trained.result.step,
        "final_train_loss": history[-1]["loss"] if history else None,
        # Kendall et al.'s effective weights of the two losses at the end of training.
        "task_weights": {"direction": float(np.exp(-log_vars[0])), "regression": float(0.5 * np.exp(-log_vars[1]))},
    })
    out = Path(out_dir)
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out / "table.csv", multitask_table(metrics).to_csv(index=False))
    write_multitask_meta(out, config, trained.data)
    return metrics
