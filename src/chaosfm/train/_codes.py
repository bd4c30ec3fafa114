"""Code streams for a code model (GPT or Mamba): the data, the loss, and the exogenous clock.

:class:`CodeData` holds int32 codes per asset from a tokenizer, with optional held-out streams and
an exogenous series per code; :func:`code_loss` is the mean next-code cross-entropy of a batch of
windows. With ``segments > 1`` a window is read in segments: the model state (GPT key/value
memory, Mamba SSM state) carries from one segment to the next with its gradient stopped, and each
segment is rematerialised in the backward pass, so memory is that of one segment (truncated BPTT).

The exogenous input of ``exo_clock`` models (:func:`exo_series`) is, per code, the standardised
log realized volatility of the rows up to that code's last row (log close returns for candles,
first differences for trajectories, over ``window`` rows), standardised with training-row
statistics only.

:func:`fit_code_model` initialises the configured model from the run's seed and trains it on
windows of the training streams with the one loop: what ``chaosfm train`` runs inside its run
folder and what a forecaster that trains its own code model runs inside a scratch folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.sharding import Mesh

from chaosfm._random import run_keys
from chaosfm.models import AbstractCodeModel, build_model
from chaosfm.train._config import TrainRunConfig
from chaosfm.train._loop import TrainResult, train
from chaosfm.train._shards import ShardSet
from chaosfm.train._windows import WindowSampler, hold_out

__all__ = ["CodeData", "code_loss", "code_windows", "exo_series", "exo_statistics", "fit_code_model", "row_volatility"]


@dataclass(frozen=True)
class CodeData:
    """Code streams to train on, per asset, oldest code first.

    Attributes:
        train: int codes per asset (what the model fits).
        vocab_size: the tokenizer's codebook size.
        valid: held-out codes per asset, each continuing the same asset's training stream.
        exo_train: an exogenous float per training code (e.g. standardised log realized
            volatility, known at that code's time), for models with ``exo_clock``.
        exo_valid: the same for the held-out codes.
        trained_through: the last timestamp per asset the training codes cover (recorded in meta.json).
        upstream_trained_through: the tokenizer's ``trained_through``, recorded beside it.
    """

    train: Mapping[str, np.ndarray]
    vocab_size: int
    valid: Mapping[str, np.ndarray] | None = None
    exo_train: Mapping[str, np.ndarray] | None = None
    exo_valid: Mapping[str, np.ndarray] | None = None
    trained_through: Mapping[str, Any] | None = None
    upstream_trained_through: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("CodeData.train: no training streams")
        for label, streams in (("train", self.train), ("valid", self.valid or {})):
            for asset, codes in streams.items():
                array = np.asarray(codes)
                if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                    raise ValueError(
                        f"CodeData.{label}[{asset!r}]: expected 1-D integer codes, "
                        f"got {array.dtype} {array.shape}"
                    )
                if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
                    raise ValueError(
                        f"CodeData.{label}[{asset!r}]: codes must lie in 0..{self.vocab_size - 1}, "
                        f"found {array.min()}..{array.max()}"
                    )
        for label, exo, codes in (
            ("exo_train", self.exo_train, self.train),
            ("exo_valid", self.exo_valid, self.valid),
        ):
            for asset, series in (exo or {}).items():
                if (
                    codes is None
                    or asset not in codes
                    or np.asarray(series).shape != np.asarray(codes[asset]).shape
                ):
                    raise ValueError(
                        f"CodeData.{label}[{asset!r}]: needs one value per code of the same asset"
                    )
                if not np.all(np.isfinite(series)):
                    raise ValueError(f"CodeData.{label}[{asset!r}]: holds NaN or inf")

    @property
    def max_code(self) -> int:
        return max(int(np.max(codes)) for codes in self.train.values() if np.asarray(codes).size)


def _segment_loss(model, codes, targets, state, exo):
    """Summed cross-entropy and hits of one segment for a batch, and the state after it."""

    def one(codes, state, exo):
        kwargs = {} if exo is None else {"exo": exo}
        return model(codes, state=state, **kwargs)

    logits, state = jax.vmap(one)(codes, state, exo)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    hits = jnp.argmax(logits, axis=-1) == targets
    return jnp.sum(losses), jnp.sum(hits), state


def code_loss(
    model: AbstractCodeModel, batch: dict[str, jax.Array], key: Any = None, *, segments: int = 1
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean next-code cross-entropy (nats) over a batch of windows, by truncated BPTT when ``segments > 1``.

    Args:
        model: the code model.
        batch: ``codes`` of shape ``(batch, segments * length + 1)`` and, for ``exo_clock``
            models, ``exo`` of the same shape.
        key: unused (no dropout); accepted for the loop's signature.
        segments: how many segments each window is read in.
    """
    del key
    codes = batch["codes"]
    inputs, targets = codes[:, :-1], codes[:, 1:]
    exo = batch.get("exo")
    exo_inputs = None if exo is None else exo[:, :-1]
    size, total = inputs.shape
    if segments == 1:
        loss_sum, hits, _ = _segment_loss(model, inputs, targets, None, exo_inputs)
    else:
        length = total // segments

        # (segments, batch, length)
        def split(x):
            return None if x is None else jnp.swapaxes(x.reshape(size, segments, length), 0, 1)

        state0 = jax.vmap(lambda _: model.init_state())(jnp.arange(size))

        @jax.checkpoint
        def segment(model, state, xs):
            seg_codes, seg_targets, seg_exo = xs
            return _segment_loss(model, seg_codes, seg_targets, state, seg_exo)

        def body(state, xs):
            loss_sum, hits, state = segment(model, jax.lax.stop_gradient(state), xs)
            return state, (loss_sum, hits)

        _, (losses, hit_counts) = jax.lax.scan(
            body, state0, (split(inputs), split(targets), split(exo_inputs))
        )
        loss_sum, hits = jnp.sum(losses), jnp.sum(hit_counts)
    count = size * total
    return loss_sum / count, {"accuracy": hits / count}


def code_windows(
    config: TrainRunConfig, data: CodeData, *, val_fraction: float, with_exo: bool
) -> tuple[WindowSampler, dict[str, np.ndarray] | None]:
    """The windows a code model trains on: a :class:`WindowSampler` over ``data.train`` (codes,
    and ``exo`` when ``with_exo``) after :func:`hold_out` kept the last ``val_fraction`` of each
    stream out as the held-out batch (returned beside it; None when nothing was held out)."""
    train_config = config.train
    window = config.model.context_length * train_config.tbptt_segments + 1
    streams = {
        asset: {"codes": np.asarray(codes, np.int32)}
        | ({"exo": np.asarray(data.exo_train[asset], np.float32)} if with_exo else {})
        for asset, codes in data.train.items()
    }
    streams, heldout = hold_out(streams, val_fraction, window, train_config.batch_size,
                                label=f"train {config.model.kind}")
    sampler = WindowSampler(streams, window, train_config.batch_size, train_config.seed,
                            what="model.context_length: a training window")
    return sampler, heldout


def fit_code_model(
    config: TrainRunConfig,
    data: CodeData | None,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    mesh: Mesh | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    val_fraction: float = 0.0,
    on_checkpoint: Callable[[int], None] | None = None,
    shards: ShardSet | None = None,
) -> TrainResult:
    """Train the configured code model on windows of ``data.train`` with :func:`~chaosfm.train.train`.

    The initial weights come from ``config.train.seed`` (:func:`chaosfm._random.run_keys`); windows
    are ``context_length * tbptt_segments + 1`` codes drawn by :class:`WindowSampler`, with the
    exogenous series when the model has ``exo_clock``. Checkpoints and ``log.jsonl`` go into
    ``run_dir``; nothing else is written. Check the config against the data first
    (:func:`~chaosfm.train.check_against_data`): this function assumes it fits.

    Args:
        config: the model and loop sections.
        data: the training code streams (and their exogenous series); None with ``shards``.
        run_dir: the folder of the loop's checkpoints and log.
        resume: continue from the newest checkpoint in ``run_dir``.
        mesh: the devices to train on (a ``data`` Mesh from :func:`~chaosfm.train.data_mesh`,
            laid out as ``train.mesh`` says, or a ``('data', 'fsdp')`` mesh); None for one device.
        on_step: called as ``on_step(step, metrics)`` after each update.
        val_fraction: the last fraction of each training stream kept out of the gradient and
            scored as ``val_loss`` (:func:`~chaosfm.train.heldout_split`; ``chaosfm train``
            passes ``train.val_fraction``); 0: every training code is trained on.
        on_checkpoint: called as ``on_checkpoint(step)`` after each checkpoint.
        shards: read the windows :func:`code_windows` gave (and its held-out batch) from these
            shards through Grain (:class:`~chaosfm.train.ShardStream`, this process's rows, in the
            same order) instead of ``data``.
    """
    train_config = config.train
    model_config = config.model.to_model_config()
    model = build_model(model_config, key=run_keys(train_config.seed).init)
    segments = train_config.tbptt_segments
    window = model_config.context_length * segments + 1
    if shards is None:
        if data is None:
            raise ValueError("fit_code_model: give data or shards")
        sampler, heldout = code_windows(config, data, val_fraction=val_fraction, with_exo=model.uses_exo)
    else:
        names = ["codes", "exo"] if model.uses_exo else ["codes"]
        sampler = shards.stream(batch_size=train_config.batch_size, seed=train_config.seed, names=names,
                                process_index=jax.process_index(), process_count=jax.process_count())
        heldout = shards.heldout(names)

    def loss_fn(model, batch, key):
        return code_loss(model, batch, key, segments=segments)

    return train(
        model, loss_fn, sampler, train_config, run_dir, resume=resume, mesh=mesh,
        tokens_per_step=train_config.batch_size * (window - 1), on_step=on_step,
        description=f"train {config.model.kind}", heldout=heldout, on_checkpoint=on_checkpoint,
    )


def row_volatility(part: pd.DataFrame, columns: list[str], window: int) -> np.ndarray:
    """Log realized volatility at each row of one asset, from that row and the ``window - 1`` before it.

    Log close returns for candles, first differences of the channels for trajectories; NaN until
    the window is full.
    """
    if "close" in part.columns:
        steps = np.diff(np.log(part["close"].to_numpy(np.float64)))[:, None]
    else:
        steps = np.diff(part[columns].to_numpy(np.float64), axis=0)
    squared = np.concatenate([[np.nan], np.sum(steps**2, axis=1)])
    variance = pd.Series(squared).rolling(window, min_periods=window).mean().to_numpy()
    return np.log(np.sqrt(variance) + 1e-12)


def exo_statistics(train_parts: Mapping[str, pd.DataFrame], columns: list[str], window: int) -> dict[str, float]:
    """Mean and std of the training rows' log realized volatility (and the ``window``): what
    :func:`exo_series` standardises with."""
    values = np.concatenate([row_volatility(part, columns, window) for part in train_parts.values()])
    values = values[np.isfinite(values)]
    return {
        "mean": float(values.mean()) if values.size else 0.0,
        "std": float(max(values.std(), 1e-6)) if values.size else 1.0,
        "window": window,
    }


def exo_series(part: pd.DataFrame, ends: np.ndarray, columns: list[str], stats: Mapping[str, float]) -> np.ndarray:
    """Standardised log realized volatility per code (``stats``: training ``mean``, ``std``, ``window``)."""
    raw = row_volatility(part, columns, int(stats["window"]))[ends]
    z = (raw - stats["mean"]) / stats["std"]
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)
