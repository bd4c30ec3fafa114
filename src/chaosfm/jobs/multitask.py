"""``chaosfm multitask``: train the long-horizon multitask head by truncated BPTT, then score it per
protocol class.

The data, batches, loss and the history pass are :mod:`chaosfm.train`'s
(:func:`~chaosfm.train.prepare_multitask_data`, :func:`~chaosfm.train.multitask_batches`,
:func:`~chaosfm.train.tbptt_loss`, :func:`~chaosfm.train.predict_history`); the per-class scores
are :func:`chaosfm.evaluate.score_multitask`'s. This job fences the data (the one default cutoff of
every command), trains, classifies every window from the ``trained_through`` of the network and of
the feature scaler upstream of it, and writes the run folder: ``config.yaml``,
``model_config.json``, ``scaler.json`` (feature and target scales), ``model.eqx``, ``log.jsonl``,
``checkpoints/``, ``metrics.json``, ``predictions.csv``, ``table.csv`` and ``meta.json``
(``trained_through`` of the network, ``upstream_trained_through`` of the scaler).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm._progress import say
from chaosfm._random import run_keys
from chaosfm.data import (
    DIRECTION_NAMES,
    EMBARGOED,
    PURGED,
    UNLABELLED,
    WARMUP,
    feature_warmup,
    trained_through_from_json,
    trained_through_to_json,
)
from chaosfm.evaluate import multitask_table, score_multitask, window_class_at
from chaosfm.jobs._common import (
    DEFAULT_CUTOFF_FRACTION,
    Cutoff,
    ReadOptions,
    check_resume,
    finish_run,
    load_data,
    out_field,
    resolve_fence,
    write_config,
    write_loss_plot,
)
from chaosfm.models import FeatureMamba, MultitaskConfig, count_params
from chaosfm.train import (
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    SCALER_FILE,
    MultitaskData,
    MultitaskSettings,
    TrainConfig,
    TrainResult,
    data_mesh,
    multitask_batches,
    multitask_heldout,
    predict_history,
    prepare_multitask_data,
    serialise,
    tbptt_loss,
    train,
)

__all__ = ["FLAGS", "MultitaskModelSection", "MultitaskRunConfig", "read", "run"]

FLAGS = {"seed": "train.seed", "steps": "train.steps"}
"""CLI flag -> config key (the other flags are top-level keys of the same name)."""

_SPLIT_NAMES = ("train", "validation", "test")


class MultitaskModelSection(BaseModel):
    """``model:``: the fields of :class:`~chaosfm.models.MultitaskConfig` but ``n_features``."""

    model_config = ConfigDict(extra="forbid")

    # Small on purpose: sp500 up to 2015 holds ~35 non-overlapping 90-day outcomes, and wider or
    # longer-trained nets memorised them (validation coverage of the [0.1, 0.9] quantile interval fell below 0.2).
    d_model: int = Field(16, gt=0)
    n_layers: int = Field(2, gt=0)
    d_state: int = Field(8, gt=0)
    head_dim: int = Field(8, gt=0)
    expand: int = Field(2, gt=0)
    d_conv: int = Field(4, gt=0)
    chunk_size: int = Field(64, gt=0)
    attention_every: int = Field(0, ge=0, description="every N-th layer is sliding-window attention")
    attention_heads: int = Field(4, gt=0)
    attention_kv_heads: int = Field(2, gt=0)
    attention_window: int = Field(128, gt=0, description="rows each attention query sees")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def to_config(self, n_features: int) -> MultitaskConfig:
        try:
            return MultitaskConfig(n_features=n_features, **self.model_dump())
        except ValueError as error:
            raise ConfigError("; ".join(f"model.{p}" for p in str(error).split("; "))) from None


def _default_train() -> TrainConfig:
    return TrainConfig(steps=100, batch_size=16, learning_rate=1e-3, warmup_steps=10, weight_decay=0.1,
                       tbptt_segments=4, checkpoint_every=50, log_every=10)


class MultitaskRunConfig(ReadOptions):
    """Everything ``chaosfm multitask`` reads; each top-level key is also a flag."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("sp500", description="built-in dataset name or CSV/Parquet path (market data)")
    horizon: int = Field(90, ge=1, description="H: rows ahead of the forward log return")
    threshold: float = Field(0.05, ge=0, description="direction is up above +threshold, down below -threshold")
    vol_horizon: int = Field(30, ge=2, description="rows of the forward realized volatility")
    cutoff: Cutoff = Field(None, description="last timestamp anything may fit on")
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    val_fraction: float = Field(0.15, ge=0, lt=1, description="share of the rows up to the cutoff kept for validation")
    embargo: int = Field(5, ge=0, description="rows after each split boundary where no label may start")
    segment_length: int = Field(128, gt=1, description="rows per TBPTT segment (and per scoring segment)")
    burn_in: int = Field(128, ge=0, description="first rows of a training window that only warm the state")
    causal_checks: int = Field(3, ge=0, description="truncation points at which features are re-checked causal")
    out: Path = out_field("multitask")
    resume: bool = Field(False, description="continue from the run folder's newest checkpoint (--resume)")
    model: MultitaskModelSection = Field(default_factory=MultitaskModelSection)
    train: TrainConfig = Field(default_factory=_default_train)

    @property
    def span(self) -> int:
        return max(self.horizon, self.vol_horizon)

    @property
    def window(self) -> int:
        return self.segment_length * self.train.tbptt_segments

    @property
    def settings(self) -> MultitaskSettings:
        """What the library's data and batches read of this config."""
        return MultitaskSettings(
            horizon=self.horizon, threshold=self.threshold, vol_horizon=self.vol_horizon,
            val_fraction=self.val_fraction, embargo=self.embargo, causal_checks=self.causal_checks,
            window=self.window, burn_in=self.burn_in,
        )


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> MultitaskRunConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top."""
    return read_config(MultitaskRunConfig, path, overrides)


def prepare(frame: pd.DataFrame, config: MultitaskRunConfig) -> MultitaskData:
    """The head's data, fenced by the one cutoff rule: per asset, its last row at or before the cutoff."""
    fence = resolve_fence(frame, config.cutoff, config.cutoff_fraction)
    before = fence.before(frame)
    cut_rows = {}
    for asset, rows in frame.groupby("asset", sort=False).indices.items():
        inside = np.flatnonzero(before[rows])
        cut_rows[str(asset)] = int(inside[-1]) if inside.size else -1
    return prepare_multitask_data(frame, config.settings, cut_rows)


def train_head(
    config: MultitaskRunConfig,
    out: Path,
    frame: pd.DataFrame,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[FeatureMamba, MultitaskData, TrainResult]:
    """Train the head on ``frame`` with the shared loop; write its files into ``out``.

    The held-out loss (``val_loss`` in ``log.jsonl``, every ``train.eval_every`` steps) is the
    loss on the validation rows (the top-level ``val_fraction`` of the rows up to the cutoff);
    ``loss.png`` draws it beside the training loss.
    """
    if "val_fraction" in config.train.model_fields_set:
        raise ConfigError(
            f"train.val_fraction: {config.train.val_fraction} is not read by multitask; its held-out rows are "
            f"the validation split, set by the top-level val_fraction ({config.val_fraction})"
        )
    data = prepare(frame, config)
    model_config = config.model.to_config(len(data.scaler["features"]))
    resolved = config.model_dump(mode="json", exclude={"out", "resume"})
    if config.resume and (out / "config.yaml").is_file():
        check_resume(yaml.safe_load((out / "config.yaml").read_text()) or {}, resolved, sections=("model", "train"))
    mesh = data_mesh(config.train.devices, config.train.batch_size)
    write_config(out, resolved)
    write_json(out / MODEL_CONFIG_FILE, dataclasses.asdict(model_config))
    write_json(out / SCALER_FILE, {**data.scaler, "targets": data.targets})
    model = FeatureMamba(model_config, key=run_keys(config.train.seed).init)
    batches = multitask_batches(data, config.settings, config.train.batch_size, config.train.seed)
    segments = config.train.tbptt_segments

    def loss_fn(model, batch, key):
        return tbptt_loss(model, batch, key, segments=segments)

    heldout = multitask_heldout(data, config.settings, config.train.batch_size)
    if heldout is None:
        say("train multitask: no held-out loss: no window of the validation rows fits (val_fraction, segment_length)")

    def draw(step: int) -> None:
        write_loss_plot(out, loss_label="multitask loss (Kendall-weighted; unitless)", title="train multitask")

    result = train(model, loss_fn, batches, config.train, out, resume=config.resume, mesh=mesh, on_step=on_step,
                   tokens_per_step=config.train.batch_size * config.window, description="train multitask",
                   heldout=heldout, on_checkpoint=draw)
    atomic_write_bytes(out / MODEL_FILE, serialise(result.model))
    draw(result.step)
    return result.model, data, result


def predictions(model: FeatureMamba, data: MultitaskData, config: MultitaskRunConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per window in a split: origin, class, labels, predictions, baselines; and the counts
    of windows dropped per reason."""
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
        logits = output.direction_logits[origins]
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        quantiles = output.quantiles[origins] * targets["return_std"] + targets["return_mean"]
        vol = output.vol[origins] * targets["vol_std"] + targets["vol_mean"]
        for i, t in enumerate(origins):
            first_target = stamps[t + 1]
            window_class = window_class_at(stamps, _scalar(first_target), asset, own, upstream, config.embargo)
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
                # Quantile columns named by their level, as chaosfm forecast and forecasts.parquet name them.
                "0.1": float(quantiles[i, 0]),
                "0.9": float(quantiles[i, 1]),
                "forward_vol": float(labels["forward_vol"].iloc[t]),
                "predicted_vol": float(vol[i]),
                "persistence_vol": float(data.persistence[asset][t]),
            })
    return pd.DataFrame(rows), dropped


def _scalar(value: Any) -> Any:
    return pd.Timestamp(value) if isinstance(value, np.datetime64) else value


def run(
    config: MultitaskRunConfig,
    *,
    frame: pd.DataFrame | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train the head, score it per protocol class, write the run folder ``config.out``; return
    ``metrics.json`` (per-class scores under ``classes``).

    Args:
        config: the run's config.
        frame: the data (default: ``config.data`` loaded).
        on_step: the training loop's per-step hook.
    """
    out = Path(config.out)
    frame = load_data(config.data, read=config) if frame is None else frame
    model, data, result = train_head(config, out, frame, on_step=on_step)
    table, dropped = predictions(model, data, config)
    scores = score_multitask(table, config.horizon)
    log_vars = np.asarray(model.log_vars)
    history = result.history
    metrics = {
        "dataset": config.data,
        "horizon": config.horizon,
        "threshold": config.threshold,
        "vol_horizon": config.vol_horizon,
        "embargo": config.embargo,
        "boundaries": {
            asset: {"train_end": str(data.timestamps[asset][a]), "cutoff": str(data.timestamps[asset][b])}
            for asset, (a, b) in data.boundaries.items()
        },
        "climatology_quantiles": scores["climatology_quantiles"],
        "classes": scores["classes"],
        "n_embargoed_by_protocol": scores["n_embargoed_by_protocol"],
        "dropped_windows": dropped,
        "split_by_class": scores["split_by_class"],
        "params": count_params(model),
        "steps": result.step,
        "final_train_loss": history[-1]["loss"] if history else None,
        "final_val_loss": next((e["val_loss"] for e in reversed(history) if "val_loss" in e), None),
        # Kendall et al.'s effective weights of the two losses at the end of training.
        "task_weights": {"direction": float(np.exp(-log_vars[0])), "regression": float(0.5 * np.exp(-log_vars[1]))},
    }
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "predictions.csv", table.to_csv(index=False))
    atomic_write_text(out / "table.csv", multitask_table(metrics).to_csv(index=False))
    finish_run(out, seed=config.train.seed, trained_through=trained_through_to_json(data.trained_through),
               kind="multitask", upstream_trained_through=data.scaler["trained_through"])
    return metrics
