"""The long-horizon multitask head's training job (``chaosfm multitask``), by truncated BPTT.

:func:`train_multitask` loads a market dataset and builds, per asset, the causal features of
:func:`~chaosfm.data.multitask_features` (checked causal on truncated histories first) and the
labels of :func:`~chaosfm.data.label_frame`. Rows split three ways at two boundaries: *train*
(the network fits these), *validation* (the last ``val_fraction`` of the rows up to the cutoff)
and *test* (after the cutoff); :func:`~chaosfm.data.assign_splits` purges every window whose label
span crosses a boundary and the ``embargo`` rows after each.

Two fitted artifacts, each with its ``trained_through``:

- the *scaler* (feature means and deviations) reads every row up to the cutoff;
- the *network* (and the target scales) reads rows up to the train/validation boundary only.

So when :func:`chaosfm.evaluate.run_multitask` scores the run, the protocol's classes
(:func:`~chaosfm.evaluate.classify_window`, from these records) come out as: training windows
``in_sample``, validation windows ``within_pretrain`` (only the scaler saw them), test windows
``fresh``.

Training windows hold ``segment_length * train.tbptt_segments`` consecutive rows; the network
reads them segment by segment, carrying its state with the gradient stopped between segments
(truncated BPTT), and the first ``burn_in`` rows of a window only warm the state. Scoring runs
the network once over each asset's whole history, segment by segment, so every row's prediction
has read the full history before it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import ArtifactError, atomic_write_bytes, verify_run, write_json, write_meta, write_yaml
from chaosfm._config import ConfigError
from chaosfm.data import DataError, TimeFence, load, trained_through_to_json
from chaosfm.data._labels import (
    assign_splits,
    boundary_rows,
    check_causal,
    feature_warmup,
    label_frame,
    multitask_features,
    trailing_realized_vol,
)
from chaosfm.models import FeatureMamba, MultitaskConfig, MultitaskOutput, multitask_loss
from chaosfm.train._codes import _same_run
from chaosfm.train._config import TrainConfig
from chaosfm.train._loop import TrainResult, train

__all__ = ["MultitaskData", "MultitaskModelSection", "MultitaskRunConfig", "MultitaskTrained", "WindowBatches",
           "load_multitask_run", "predict_history", "prepare_multitask_data", "tbptt_loss", "train_multitask"]

SPLITS = ("train", "validation", "test")
_CLIP = 8.0  # standardised features beyond 8 deviations are clipped: one bad print must not dominate


class MultitaskModelSection(BaseModel):
    """``model:``: the fields of :class:`~chaosfm.models.MultitaskConfig` but ``n_features``."""

    model_config = ConfigDict(extra="forbid")

    # Small on purpose: sp500 up to 2015 holds ~35 non-overlapping 90-day outcomes, and wider or
    # longer-trained nets memorised them (validation coverage of [p10, p90] fell below 0.2).
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


class MultitaskRunConfig(BaseModel):
    """Everything ``chaosfm multitask`` reads; each top-level key is also a flag."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field("sp500", description="built-in dataset name or CSV/Parquet path (market data)")
    horizon: int = Field(90, ge=1, description="H: rows ahead of the forward log return")
    threshold: float = Field(0.05, ge=0, description="direction is up above +threshold, down below -threshold")
    vol_horizon: int = Field(30, ge=2, description="rows of the forward realized volatility")
    cutoff: str | float | None = Field(None, description="last timestamp anything may fit on")
    cutoff_fraction: float = Field(0.8, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="share of the rows up to the cutoff kept for validation")
    embargo: int = Field(5, ge=0, description="rows after each split boundary where no label may start")
    segment_length: int = Field(128, gt=1, description="rows per TBPTT segment (and per scoring segment)")
    burn_in: int = Field(128, ge=0, description="first rows of a training window that only warm the state")
    causal_checks: int = Field(3, ge=0, description="truncation points at which features are re-checked causal")
    out: str | None = Field(None, description="run folder")
    model: MultitaskModelSection = Field(default_factory=MultitaskModelSection)
    train: TrainConfig = Field(default_factory=_default_train)

    @property
    def span(self) -> int:
        return max(self.horizon, self.vol_horizon)

    @property
    def window(self) -> int:
        return self.segment_length * self.train.tbptt_segments


@dataclass
class MultitaskData:
    """Every row of every asset, and what was fitted on which of them.

    Attributes:
        timestamps, features (standardised, clipped, float32; 0 in the warm-up rows), labels (a
        frame), split (codes of :func:`assign_splits`), persistence (trailing realized vol over
        ``vol_horizon`` rows): per asset;
        boundaries: per asset, the last row of train and of validation;
        scaler: feature names, means, deviations, and its ``trained_through``;
        targets: means and deviations of the training labels;
        trained_through: what the network reads (rows up to the train boundary).
    """

    timestamps: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    labels: dict[str, pd.DataFrame]
    split: dict[str, np.ndarray]
    persistence: dict[str, np.ndarray]
    boundaries: dict[str, tuple[int, int]]
    scaler: dict[str, Any]
    targets: dict[str, float]
    trained_through: dict[str, Any]


def _cutoff_rows(frame: pd.DataFrame, config: MultitaskRunConfig) -> dict[str, int]:
    """Per asset, the last row (within the asset) at or before the cutoff."""
    rows = {}
    for asset, part in frame.groupby("asset", sort=False):
        stamps = part["timestamp"]
        if config.cutoff is None:
            rows[str(asset)] = max(0, int(len(stamps) * config.cutoff_fraction) - 1)
            continue
        try:
            rows[str(asset)] = boundary_rows(stamps, [config.cutoff])[0]
        except DataError as error:
            raise ConfigError(f"cutoff: {error}") from None
    return rows


def prepare_multitask_data(frame: pd.DataFrame, config: MultitaskRunConfig) -> MultitaskData:
    """Features, labels, purged splits and the two fitted scalings of a validated market frame.

    Raises:
        ConfigError: naming the key when a split is too short for the windows asked for.
        LeakageError: when a feature is not causal.
    """
    warmup = feature_warmup()
    if config.causal_checks:
        n_rows = int(frame.groupby("asset", sort=False).size().min())
        probes = np.linspace(warmup, n_rows - 2, config.causal_checks + 2)[1:-1].astype(int)
        check_causal(multitask_features, frame, probes.tolist(), what="multitask features")
    features = multitask_features(frame)
    names = [c for c in features.columns if c not in ("asset", "timestamp")]
    labels = label_frame(frame, horizon=config.horizon, threshold=config.threshold, vol_horizon=config.vol_horizon)
    cut_rows = _cutoff_rows(frame, config)
    data: dict[str, dict[str, Any]] = {k: {} for k in ("timestamps", "raw", "labels", "split", "persistence")}
    boundaries, seen_scaler, seen_network = {}, {}, {}
    for asset, part in frame.groupby("asset", sort=False):
        asset = str(asset)
        index, cut = part.index, cut_rows[asset]
        n = len(part)
        if cut - warmup < 2 * config.span:
            raise ConfigError(
                f"cutoff: asset {asset!r} has {max(cut + 1, 0)} rows up to the cutoff; the features need "
                f"{warmup} and labels {config.span} more (twice) before anything can be trained"
            )
        val_rows = int(round(config.val_fraction * (cut - warmup)))
        train_end = cut - val_rows
        boundaries[asset] = (train_end, cut)
        bounds = [train_end, cut] if val_rows > 0 else [cut]
        split = assign_splits(n, config.span, bounds, embargo=config.embargo, warmup=warmup)
        if val_rows == 0:  # one boundary: split 1 is the test set
            split = np.where(split == 1, 2, split)
        stamps = part["timestamp"].to_numpy()
        data["timestamps"][asset] = stamps
        data["raw"][asset] = features.loc[index, names].to_numpy(np.float64)
        data["labels"][asset] = labels.loc[index].reset_index(drop=True)
        data["split"][asset] = split
        data["persistence"][asset] = trailing_realized_vol(part["close"].to_numpy(), config.vol_horizon)
        seen_scaler[asset], seen_network[asset] = _stamp(stamps[cut]), _stamp(stamps[train_end])
    # The scaler reads rows up to the cutoff only: the fence says so, and checks it.
    used = pd.concat([part.iloc[: boundaries[str(a)][1] + 1] for a, part in frame.groupby("asset", sort=False)])
    TimeFence(seen_scaler).check(used, "multitask feature scaler")
    pre_cutoff = np.concatenate([data["raw"][a][warmup : boundaries[a][1] + 1] for a in data["raw"]])
    mean = np.nanmean(pre_cutoff, axis=0)
    std = np.nanstd(pre_cutoff, axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    standardised = {}
    for asset, raw in data["raw"].items():
        z = np.clip((raw - mean) / std, -_CLIP, _CLIP)
        if not np.all(np.isfinite(z[warmup:])):
            row = warmup + int(np.argwhere(~np.isfinite(z[warmup:]))[0, 0])
            raise DataError(f"a feature is not finite after the warm-up rows (asset {asset!r})", row=row)
        standardised[asset] = np.nan_to_num(z, nan=0.0).astype(np.float32)
    train_labels = pd.concat([data["labels"][a][data["split"][a] == 0] for a in data["labels"]])
    if len(train_labels) == 0:
        raise ConfigError("val_fraction: no training window is left before the validation boundary")
    targets = {
        "return_mean": float(train_labels["forward_return"].mean()),
        "return_std": float(train_labels["forward_return"].std() or 1.0),
        "vol_mean": float(train_labels["forward_vol"].mean()),
        "vol_std": float(train_labels["forward_vol"].std() or 1.0),
    }
    scaler = {"features": names, "mean": mean.tolist(), "std": std.tolist(),
              "trained_through": trained_through_to_json(seen_scaler)}
    return MultitaskData(data["timestamps"], standardised, data["labels"], data["split"], data["persistence"],
                         boundaries, scaler, targets, seen_network)


def _stamp(value: Any) -> Any:
    return pd.Timestamp(value) if isinstance(value, np.datetime64) else value


def _standardised_targets(labels: pd.DataFrame, targets: dict[str, float]) -> tuple[np.ndarray, ...]:
    direction = labels["direction"].to_numpy(np.int32)
    ret = (labels["forward_return"].to_numpy() - targets["return_mean"]) / targets["return_std"]
    vol = (labels["forward_vol"].to_numpy() - targets["vol_mean"]) / targets["vol_std"]
    return direction, np.nan_to_num(ret).astype(np.float32), np.nan_to_num(vol).astype(np.float32)


class WindowBatches:
    """``batches(step)``: training windows of consecutive rows, drawn from ``(seed, step)`` alone."""

    def __init__(self, data: MultitaskData, config: MultitaskRunConfig):
        window, warmup = config.window, feature_warmup()
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("features", "direction", "ret", "vol", "train")}
        starts, offset = [], 0
        for asset, feats in data.features.items():
            last = data.boundaries[asset][0]  # the network never reads a row past the train boundary
            rows = slice(0, last + 1)
            direction, ret, vol = _standardised_targets(data.labels[asset], data.targets)
            for name, values in (("features", feats), ("direction", direction), ("ret", ret), ("vol", vol),
                                 ("train", data.split[asset] == 0)):
                parts[name].append(values[rows])
            if last + 1 - warmup >= window:
                starts.append(offset + np.arange(warmup, last + 2 - window))
            offset += last + 1
        if not starts:
            raise ConfigError(
                f"segment_length: a training window of segment_length * train.tbptt_segments = {window} rows "
                f"is longer than every asset's training rows (after {warmup} warm-up rows)"
            )
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        self.starts = np.concatenate(starts)
        self.window, self.burn_in = window, config.burn_in
        self.batch_size, self.seed = config.train.batch_size, config.train.seed

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = self.starts[rng.integers(0, self.starts.size, self.batch_size)]
        index = starts[:, None] + np.arange(self.window)[None, :]  # (batch, window)
        batch = {k: v[index] for k, v in self.arrays.items() if k != "train"}
        batch["mask"] = self.arrays["train"][index] & (np.arange(self.window) >= self.burn_in)[None, :]
        return batch


def tbptt_loss(model: FeatureMamba, batch: dict[str, jax.Array], key: Any = None, *, segments: int = 1):
    """:func:`multitask_loss` over a batch of windows read in ``segments`` (state carried, gradient stopped)."""
    del key
    features = batch["features"]
    size, window, _ = features.shape
    if segments == 1:
        output = jax.vmap(lambda f: model(f)[0])(features)
    else:
        length = window // segments
        # (segments, batch, length, features)
        pieces = jnp.swapaxes(features.reshape(size, segments, length, -1), 0, 1)
        state0 = jax.vmap(lambda _: model.init_state())(jnp.arange(size))

        @jax.checkpoint
        def segment(model, state, piece):
            return jax.vmap(lambda f, s: model(f, state=s))(piece, state)

        def body(state, piece):
            output, state = segment(model, jax.lax.stop_gradient(state), piece)
            return state, output

        _, outputs = jax.lax.scan(body, state0, pieces)
        # back to (batch, window, ...)
        output = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x, 0, 1).reshape(size, window, *x.shape[3:]), outputs
        )
    return multitask_loss(output, batch["direction"], batch["ret"], batch["vol"], batch["mask"], model.log_vars)


def predict_history(model: FeatureMamba, features: np.ndarray, segment_length: int) -> MultitaskOutput:
    """Head outputs at every row of one history, read segment by segment from the empty state."""
    rows = features.shape[0]
    segments = -(-rows // segment_length)
    padded = np.zeros((segments * segment_length, features.shape[1]), np.float32)
    padded[:rows] = features  # padding sits after the last row: a causal model never reads it back

    @eqx.filter_jit
    def run(model, pieces):
        def body(state, piece):
            output, state = model(piece, state=state)
            return state, output

        _, outputs = jax.lax.scan(body, model.init_state(), pieces)
        return jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), outputs)

    output = run(model, jnp.asarray(padded.reshape(segments, segment_length, -1)))
    return MultitaskOutput(*(np.asarray(x)[:rows] for x in output))


@dataclass
class MultitaskTrained:
    """What :func:`train_multitask` hands the scorer: the network, the prepared data, the loop's result."""

    model: FeatureMamba
    data: MultitaskData
    config: MultitaskRunConfig
    result: TrainResult


def train_multitask(
    config: MultitaskRunConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    frame: pd.DataFrame | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> MultitaskTrained:
    """Train the multitask head on ``config.data`` with the shared loop; write the run folder.

    The folder gets ``config.yaml``, ``model_config.json``, ``scaler.json`` (feature and target
    scales), ``model.eqx``, ``log.jsonl``, ``checkpoints/`` and ``meta.json`` (``trained_through``
    of the network, ``upstream_trained_through`` of the scaler). Scoring is
    :func:`chaosfm.evaluate.run_multitask`'s.
    """
    frame = load(config.data) if frame is None else frame
    data = prepare_multitask_data(frame, config)
    model_config = config.model.to_config(len(data.scaler["features"]))
    out = Path(out_dir)
    resolved = config.model_dump(mode="json")
    if resume and (out / "config.yaml").is_file():
        _same_run(yaml.safe_load((out / "config.yaml").read_text()) or {}, resolved)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", resolved)
    write_json(out / "model_config.json", dataclasses.asdict(model_config))
    write_json(out / "scaler.json", {**data.scaler, "targets": data.targets})

    # Every key of the run derives from the seed: the loop's from key(seed), the init from this.
    model = FeatureMamba(model_config, key=jax.random.fold_in(jax.random.key(config.train.seed), 1))
    batches = WindowBatches(data, config)
    segments = config.train.tbptt_segments

    def loss_fn(model, batch, key):
        return tbptt_loss(model, batch, key, segments=segments)

    result = train(model, loss_fn, batches, config.train, out, resume=resume, on_step=on_step,
                   tokens_per_step=config.train.batch_size * config.window, description="train multitask")
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, result.model)
    atomic_write_bytes(out / "model.eqx", buffer.getvalue())
    write_multitask_meta(out, config, data)
    return MultitaskTrained(result.model, data, config, result)


def write_multitask_meta(out: Path, config: MultitaskRunConfig, data: MultitaskData) -> None:
    """``meta.json`` of a multitask run (hashes every file present; call again after adding one)."""
    write_meta(out, seed=config.train.seed, trained_through=trained_through_to_json(data.trained_through),
               extra={"kind": "multitask", "upstream_trained_through": data.scaler["trained_through"]})


def load_multitask_run(run_dir: str | os.PathLike[str]) -> tuple[FeatureMamba, dict[str, Any], dict[str, Any]]:
    """The trained network, its scaler (``scaler.json``) and ``meta.json``, after checking hashes."""
    root = Path(run_dir)
    meta = verify_run(root)
    if meta.get("kind") != "multitask":
        raise ArtifactError(f"{root}: a run of kind {meta.get('kind')!r}, not a multitask run")
    try:
        config = MultitaskConfig(**json.loads((root / "model_config.json").read_text()))
        with open(root / "model.eqx", "rb") as stream:
            model = eqx.tree_deserialise_leaves(stream, FeatureMamba(config, key=jax.random.key(0)))
        scaler = json.loads((root / "scaler.json").read_text())
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        raise ArtifactError(f"{root}: model_config.json, model.eqx or scaler.json cannot be read ({error})") from None
    return model, scaler, meta
