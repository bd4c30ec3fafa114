"""``chaosfm pretrain``: self-supervised pretraining of a JEPA (with or without its flow head).

:class:`PretrainConfig` has three sections: ``data`` (datasets, the cutoff: one date, one per
asset, or a fraction of each asset's rows), ``model`` (fields of :class:`~chaosfm.models.JEPAConfig`)
and ``train`` (the loop's :class:`~chaosfm.train.TrainConfig`). :func:`run_pretrain` turns candles
into standardised causal features (statistics from the training rows only), trains with
:func:`chaosfm.train.train` (the EMA target follows through its ``post_update`` hook), checks for
collapse on held-out rows (after the cutoff and the embargo) and writes the run folder:
``config.yaml``, ``model_config.json``, ``scaler.json``, ``model.eqx``, ``metrics.json``,
``log.jsonl``, ``checkpoints/`` and ``meta.json`` with ``trained_through``: the last timestamp of
every asset whose rows reached the encoder. :func:`load_pretrained` reads it back, checking hashes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosfm._artifacts import ArtifactError, atomic_write_bytes, verify_run, write_json, write_meta, write_yaml
from chaosfm._config import ConfigError
from chaosfm.data import (
    DataError,
    TimeFence,
    candle_features,
    frame_kind,
    load,
    trained_through,
    trained_through_from_json,
    trained_through_to_json,
)
from chaosfm.data._fence import as_timestamp_like
from chaosfm.models import JEPA, JEPAConfig, count_params, ema_post_update, jepa_loss
from chaosfm.train._config import TrainConfig
from chaosfm.train._loop import TrainResult, train

__all__ = [
    "FEATURES",
    "FeatureScaler",
    "PretrainConfig",
    "PretrainData",
    "embed_windows",
    "feature_streams",
    "load_pretrained",
    "run_pretrain",
]

FEATURES = ("symlog_return", "body", "upper_wick", "lower_wick", "range", "realized_vol", "volume_z")
CONFIG_FILE, MODEL_CONFIG_FILE, SCALER_FILE = "config.yaml", "model_config.json", "scaler.json"
MODEL_FILE, METRICS_FILE = "model.eqx", "metrics.json"
_BEFORE_WINDOW_NORM = {"window_norm": False, "window_terms": False}


class PretrainData(BaseModel):
    """``data:``: what the encoder may see."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(description="built-in market datasets or CSV/Parquet paths")
    cutoff: str | dict[str, str] | None = Field(
        None, description="last timestamp the encoder sees: one date, or one per asset"
    )
    cutoff_fraction: float = Field(0.8, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows")
    embargo: int = Field(5, ge=0, description="rows after the cutoff kept out of the held-out check")
    vol_window: int = Field(20, ge=2, description="rows of the realized-volatility feature")

    @field_validator("names", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class PretrainConfig(BaseModel):
    """The file ``chaosfm pretrain --config`` reads."""

    model_config = ConfigDict(extra="forbid")

    data: PretrainData
    model: dict[str, Any] = Field(default_factory=dict, description="fields of JEPAConfig")
    train: TrainConfig = Field(default_factory=TrainConfig)

    def jepa_config(self) -> JEPAConfig:
        allowed = {f.name for f in dataclasses.fields(JEPAConfig)} - {"n_features"}
        unknown = sorted(set(self.model) - allowed)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        try:
            return JEPAConfig(n_features=len(FEATURES), **self.model)
        except (ValueError, TypeError) as error:
            raise ConfigError("; ".join(f"model.{p}" for p in str(error).split("; "))) from None


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature mean and std of the training rows; applied to every later row."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, streams: Mapping[str, np.ndarray]) -> "FeatureScaler":
        rows = np.concatenate([np.asarray(s, np.float64) for s in streams.values()])
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeatureScaler":
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64))


def feature_streams(frame: pd.DataFrame, vol_window: int = 20) -> dict[str, tuple[np.ndarray, pd.Series]]:
    """Per asset: causal candle features ``(T, F)`` (warm-up rows dropped) and their timestamps."""
    if frame_kind(frame) != "market":
        raise DataError("JEPA pretraining needs market data (open, high, low, close, volume)", rule="market frame")
    features = candle_features(frame, vol_window=vol_window, volume_window=vol_window)
    out = {}
    for asset, part in features.groupby("asset", sort=False):
        values = part[list(FEATURES)].to_numpy(np.float64)
        keep = np.all(np.isfinite(values), axis=1)
        out[str(asset)] = (values[keep], part["timestamp"][keep].reset_index(drop=True))
    return out


def _fence(frame: pd.DataFrame, data: PretrainData) -> TimeFence:
    example = frame["timestamp"].iloc[0]
    try:
        if isinstance(data.cutoff, dict):
            missing = sorted(set(frame["asset"].astype(str)) - set(data.cutoff))
            if missing:
                raise ConfigError(f"data.cutoff: no cutoff for asset(s) {missing}")
            return TimeFence({a: as_timestamp_like(c, example) for a, c in data.cutoff.items()}, data.embargo)
        if data.cutoff is not None:
            return TimeFence(as_timestamp_like(data.cutoff, example), data.embargo)
    except DataError as error:
        raise ConfigError(f"data.cutoff: {error}") from None
    cutoffs = {}
    for asset, part in frame.groupby("asset", sort=False):
        stamps = part["timestamp"]
        cutoffs[str(asset)] = stamps.iloc[max(0, int(len(stamps) * data.cutoff_fraction) - 1)]
    return TimeFence(cutoffs, data.embargo)


class _WindowSampler:
    """``sampler(step) -> {"features": (B, L, F)}``, drawn uniformly over every stream, seeded by step."""

    def __init__(self, streams: Mapping[str, np.ndarray], window: int, batch_size: int, seed: int):
        usable = [a for a in streams if len(streams[a]) >= window]
        if not usable:
            longest = max((len(s) for s in streams.values()), default=0)
            raise ConfigError(
                f"model.context_length: {window} is longer than every training stream (longest {longest} rows)"
            )
        self.values = np.concatenate([streams[a] for a in usable]).astype(np.float32)
        offsets = np.cumsum([0] + [len(streams[a]) for a in usable])
        self.starts = np.concatenate(
            [offsets[i] + np.arange(len(streams[a]) - window + 1) for i, a in enumerate(usable)]
        )
        self.window, self.batch_size, self.seed = window, batch_size, seed

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = self.starts[rng.integers(0, self.starts.size, self.batch_size)]
        return {"features": self.values[starts[:, None] + np.arange(self.window)[None, :]]}


@eqx.filter_jit
def _embed_batch(encoder: Any, windows: jax.Array) -> jax.Array:
    return jax.vmap(lambda w: encoder(w)[-1])(windows)


def embed_windows(
    encoder: Any, features: np.ndarray, ends: np.ndarray, window: int, *, chunk: int = 512
) -> np.ndarray:
    """Embedding at the last step of each window ``features[end - window + 1 : end + 1]``, ``(N, E)``.

    Every end needs ``window - 1`` earlier rows; batches of ``chunk`` windows share one compile.
    """
    ends = np.asarray(ends, np.int64)
    if ends.size and ends.min() < window - 1:
        raise ValueError(f"window ending at row {ends.min()} needs {window - 1} earlier rows")
    out = []
    for start in range(0, ends.size, chunk):
        part = ends[start : start + chunk]
        padded = np.concatenate([part, np.full(chunk - part.size, part[-1])])
        index = padded[:, None] - np.arange(window - 1, -1, -1)[None, :]
        out.append(np.asarray(_embed_batch(encoder, jnp.asarray(features[index], jnp.float32)))[: part.size])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _serialise(model: eqx.Module) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


def run_pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    frame: pd.DataFrame | None = None,
    resume: bool = False,
) -> TrainResult:
    """Pretrain the configured JEPA on the rows at or before the cutoff; write the run folder.

    Args:
        config: the pretraining config.
        out_dir: the run folder.
        frame: the data (default: ``load`` of ``config.data.names`` joined).
        resume: continue from the folder's newest checkpoint.

    Returns:
        The loop's result, with ``metrics`` (losses, held-out embedding spread against the VICReg
        target, ``collapsed``).
    """
    model_config = config.jepa_config()
    if frame is None:
        frame = load(",".join(config.data.names))
    fence = _fence(frame, config.data)
    train_rows = fence.train(frame)
    if len(train_rows) == 0:
        raise ConfigError(f"data.cutoff: no rows at or before the cutoff {fence.cutoff!s}")
    fence.check(train_rows, "JEPA pretraining")
    train_streams = {a: v for a, (v, _) in feature_streams(train_rows, config.data.vol_window).items()}
    scaler = FeatureScaler.fit(train_streams)
    scaled = {a: scaler(v) for a, v in train_streams.items()}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / CONFIG_FILE, config.model_dump(mode="json"))
    write_json(out / MODEL_CONFIG_FILE, dataclasses.asdict(model_config))
    write_json(out / SCALER_FILE, scaler.to_json())
    tc = config.train
    model = JEPA(model_config, key=jax.random.fold_in(jax.random.key(tc.seed), 1))
    sampler = _WindowSampler(scaled, model_config.context_length, tc.batch_size, tc.seed)
    result = train(
        model,
        jepa_loss,
        sampler,
        tc,
        out,
        resume=resume,
        tokens_per_step=tc.batch_size * model_config.context_length,
        description=f"pretrain {model.kind}",
        post_update=ema_post_update(model_config.ema_decay),
    )
    atomic_write_bytes(out / MODEL_FILE, _serialise(result.model))
    seen = trained_through(train_rows)
    metrics: dict[str, Any] = {
        "model": result.model.kind,
        "params": count_params(result.model.encoder) + count_params(result.model.predictor)
        + (count_params(result.model.flow) if result.model.flow is not None else 0),
        "encoder_params": count_params(result.model.encoder),
        "steps": result.step,
        "final": {k: v for k, v in (result.history[-1] if result.history else {}).items() if k != "step"},
        "variance_target_std": model_config.variance_std,
        "heldout": _heldout_spread(result.model, frame, fence, scaler, config.data.vol_window),
    }
    write_json(out / METRICS_FILE, metrics)
    write_meta(
        out,
        seed=tc.seed,
        trained_through=trained_through_to_json(seen),
        extra={"kind": "jepa", "model": result.model.kind, "cutoff": str(fence.cutoff)},
    )
    result.metrics = metrics
    return result


def _heldout_spread(
    model: JEPA, frame: pd.DataFrame, fence: TimeFence, scaler: FeatureScaler, vol_window: int
) -> dict[str, Any]:
    """Per-dimension std of embeddings of windows ending after the cutoff and embargo (collapse check)."""
    window = model.config.context_length
    fresh = fence.fresh(frame)
    embeddings = []
    for asset, (values, stamps) in feature_streams(frame, vol_window).items():
        keep = set(fresh.loc[fresh["asset"] == asset, "timestamp"])
        ends = np.array([i for i, s in enumerate(stamps) if s in keep and i >= window - 1])
        if ends.size:
            embeddings.append(embed_windows(model.encoder, scaler(values), ends, window))
    if not embeddings or sum(len(e) for e in embeddings) < 2:
        return {"windows": 0, "note": "no rows after the cutoff and embargo: nothing held out to check"}
    z = np.concatenate(embeddings)
    std = z.std(axis=0, ddof=1)
    target = model.config.variance_std
    return {
        "windows": int(len(z)),
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "dims_below_target": int(np.sum(std < target)),
        # The check: every dimension's std above the hinge's target.
        "all_dims_above_target": bool(np.all(std >= target)),
        # Collapse proper: the spread as a whole has fallen below the target.
        "collapsed": bool(std.mean() < target),
    }


def load_pretrained(run_dir: str | os.PathLike[str]) -> tuple[JEPA, FeatureScaler, dict[str, Any]]:
    """The JEPA, its feature scaler and meta.json (``trained_through`` parsed) of a pretrain run.

    Raises:
        ArtifactError: naming a missing or damaged file.
    """
    root = Path(run_dir)
    meta = verify_run(root)
    if meta.get("kind") != "jepa":
        raise ArtifactError(f"{root}: not a run of `chaosfm pretrain` (meta.json kind is {meta.get('kind')!r})")
    try:
        # Runs written before window_norm and window_terms existed were trained without them.
        model_config = JEPAConfig(**{**_BEFORE_WINDOW_NORM, **json.loads((root / MODEL_CONFIG_FILE).read_text())})
        scaler = FeatureScaler.from_json(json.loads((root / SCALER_FILE).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ArtifactError(f"{root}: model_config.json or scaler.json cannot be read ({error})") from None
    skeleton = JEPA(model_config, key=jax.random.key(0))
    try:
        with open(root / MODEL_FILE, "rb") as stream:
            model = eqx.tree_deserialise_leaves(stream, skeleton)
    except Exception as error:
        raise ArtifactError(f"{root / MODEL_FILE}: cannot be restored into a JEPA ({error})") from None
    meta = dict(meta)
    meta["trained_through"] = trained_through_from_json(meta.get("trained_through"))
    return model, scaler, meta
