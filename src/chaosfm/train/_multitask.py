"""The long-horizon multitask head's data, batches, loss and history pass (truncated BPTT).

:func:`prepare_multitask_data` builds, per asset, the causal features of
:func:`~chaosfm.data.multitask_features` (checked causal on truncated histories first) and the
labels of :func:`~chaosfm.data.label_frame`. Rows split three ways at two boundaries: *train*
(the network fits these), *validation* (the last ``val_fraction`` of the rows up to the cutoff)
and *test* (after the cutoff); :func:`~chaosfm.data.assign_splits` purges every window whose label
span crosses a boundary and the ``embargo`` rows after each.

Two fitted artifacts, each with its ``trained_through``:

- the *scaler* (feature means and deviations) reads every row up to the cutoff;
- the *network* (and the target scales) reads rows up to the train/validation boundary only.

So when the job scores the run, the protocol's classes
(:func:`~chaosfm.evaluate.classify_window`, from these records) come out as: training windows
``in_sample``, validation windows ``within_pretrain`` (only the scaler saw them), test windows
``fresh``.

Training windows hold ``segment_length * tbptt_segments`` consecutive rows
(:func:`multitask_batches`); :func:`tbptt_loss` reads them segment by segment, carrying the state
with the gradient stopped between segments, and the first ``burn_in`` rows of a window only warm
the state. :func:`predict_history` runs the network once over each asset's whole history, segment
by segment, so every row's prediction has read the full history before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.data import (
    DataError,
    TimeFence,
    assign_splits,
    check_causal,
    feature_warmup,
    heldout_windows,
    label_frame,
    multitask_features,
    trailing_realized_vol,
    trained_through_to_json,
)
from chaosfm.models import FeatureMamba, MultitaskOutput, multitask_loss
from chaosfm.train._windows import WindowSampler

__all__ = ["MultitaskData", "MultitaskSettings", "multitask_batches", "multitask_heldout", "predict_history",
           "prepare_multitask_data", "tbptt_loss"]

SPLITS = ("train", "validation", "test")
_CLIP = 8.0  # standardised features beyond 8 deviations are clipped: one bad print must not dominate


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


@dataclass(frozen=True)
class MultitaskSettings:
    """What the multitask data and batches depend on (the job's config, as the library reads it).

    Attributes:
        horizon: H, rows ahead of the forward log return.
        threshold: direction is up above ``+threshold``, down below ``-threshold``.
        vol_horizon: rows of the forward realized volatility.
        val_fraction: share of the rows up to the cutoff kept for validation.
        embargo: rows after each split boundary where no label may start.
        causal_checks: truncation points at which the features are re-checked causal.
        window: rows of a training window (``segment_length * tbptt_segments``).
        burn_in: first rows of a training window that only warm the state.
    """

    horizon: int = 90
    threshold: float = 0.05
    vol_horizon: int = 30
    val_fraction: float = 0.15
    embargo: int = 5
    causal_checks: int = 3
    window: int = 512
    burn_in: int = 128

    @property
    def span(self) -> int:
        return max(self.horizon, self.vol_horizon)


def prepare_multitask_data(frame: pd.DataFrame, settings: MultitaskSettings, cut_rows: dict[str, int]) -> MultitaskData:
    """Features, labels, purged splits and the two fitted scalings of a validated market frame.

    Args:
        frame: a validated market frame.
        settings: labels, splits and checks.
        cut_rows: per asset, its last row (within the asset) at or before the cutoff.

    Raises:
        ConfigError: naming the key when a split is too short for the windows asked for.
        LeakageError: when a feature is not causal.
    """
    config = settings
    warmup = feature_warmup()
    if config.causal_checks:
        n_rows = int(frame.groupby("asset", sort=False).size().min())
        probes = np.linspace(warmup, n_rows - 2, config.causal_checks + 2)[1:-1].astype(int)
        check_causal(multitask_features, frame, probes.tolist(), what="multitask features")
    features = multitask_features(frame)
    names = [c for c in features.columns if c not in ("asset", "timestamp")]
    labels = label_frame(frame, horizon=config.horizon, threshold=config.threshold, vol_horizon=config.vol_horizon)
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


def multitask_batches(data: MultitaskData, settings: MultitaskSettings, batch_size: int, seed: int):
    """``batches(step)``: training windows of consecutive rows (the one :class:`WindowSampler`),
    with ``mask`` true on the training rows past the burn-in: the network never reads a row past
    an asset's train boundary."""
    window, warmup = settings.window, feature_warmup()
    streams = _streams(data, split=0, boundary=0)
    sampler = WindowSampler(
        streams, window, batch_size, seed, first_start=warmup,
        what="segment_length: a training window of segment_length * train.tbptt_segments",
    )
    after_burn_in = (np.arange(window) >= settings.burn_in)[None, :]

    def batches(step: int) -> dict[str, np.ndarray]:
        batch = sampler(step)
        batch["mask"] = batch.pop("scored") & after_burn_in
        return batch

    batches.windows = sampler.windows  # type: ignore[attr-defined]
    return batches


def _streams(data: MultitaskData, *, split: int, boundary: int) -> dict[str, dict[str, np.ndarray]]:
    """Per asset, features and standardised targets up to its ``boundary`` (0: train, 1: the
    cutoff), with ``scored`` true on the rows of ``split`` (0 train, 1 validation)."""
    streams = {}
    for asset, feats in data.features.items():
        rows = slice(0, data.boundaries[asset][boundary] + 1)
        direction, ret, vol = _standardised_targets(data.labels[asset], data.targets)
        streams[asset] = {"features": feats[rows], "direction": direction[rows], "ret": ret[rows], "vol": vol[rows],
                          "scored": (data.split[asset] == split)[rows]}
    return streams


def multitask_heldout(data: MultitaskData, settings: MultitaskSettings, count: int) -> dict[str, np.ndarray] | None:
    """The validation rows as one batch for the loop's held-out loss, like a training batch.

    Windows of ``settings.window`` rows tile each asset backwards from its cutoff row (no window
    starts in the feature warm-up); ``mask`` is true on validation rows past the burn-in only,
    so the loss reads labels the gradient never saw (train rows earlier in a window only warm the
    state). At most ``count`` windows, evenly spread; None when no window holds a validation row.
    """
    window, warmup = settings.window, feature_warmup()
    after_burn_in = np.arange(window) >= settings.burn_in
    streams = {
        asset: {name: array[warmup:] for name, array in stream.items()}
        for asset, stream in _streams(data, split=1, boundary=1).items()
    }
    batch = heldout_windows(streams, window, count, keep=lambda piece: bool((piece["scored"] & after_burn_in).any()))
    if batch is not None:
        batch["mask"] = batch.pop("scored") & after_burn_in[None, :]
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
