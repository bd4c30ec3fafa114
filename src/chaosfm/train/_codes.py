"""Training a code model (GPT or Mamba) on streams of codes: the job behind ``chaosfm train``.

:func:`run_train` takes a :class:`TrainRunConfig` and a :class:`CodeData` (int32 codes per asset
from a tokenizer, with optional held-out streams and an exogenous series), checks the config
against the data before anything runs, trains with :func:`chaosfm.train.train`, scores held-out
codes beside the unigram baseline, and writes the run folder: ``config.yaml``,
``model_config.json``, ``model.eqx``, ``metrics.json``, ``log.jsonl``, ``checkpoints/`` and
``meta.json`` (hashes and ``trained_through``). :func:`load_run` reads it back, checking hashes.

Windows of ``context_length * tbptt_segments + 1`` codes are drawn uniformly over all positions of
all training streams, from a generator seeded by ``(seed, step)``. With ``tbptt_segments > 1`` a
window is read in segments: the model state (GPT key/value memory, Mamba SSM state) carries from
one segment to the next with its gradient stopped, and each segment is rematerialised in the
backward pass, so memory is that of one segment (truncated BPTT).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from jax.sharding import Mesh

from chaosfm._artifacts import (
    ArtifactError,
    atomic_write_bytes,
    verify_run,
    write_json,
    write_meta,
    write_yaml,
)
from chaosfm._config import ConfigError
from chaosfm.data import trained_through_to_json
from chaosfm.models import AbstractCodeModel, build_model, config_from_json, config_to_json, count_params
from chaosfm.train._config import TrainRunConfig, check_against_data, stream_lengths
from chaosfm.train._evaluate import evaluate_codes
from chaosfm.train._loop import TrainResult, train

__all__ = ["CodeData", "WindowSampler", "code_loss", "load_run", "run_train"]

CONFIG_FILE = "config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
MODEL_FILE = "model.eqx"
METRICS_FILE = "metrics.json"


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


class WindowSampler:
    """``sampler(step) -> {"codes": (batch, window)[, "exo": (batch, window)]}``, a function of the step."""

    def __init__(
        self,
        streams: Mapping[str, np.ndarray],
        window: int,
        batch_size: int,
        seed: int,
        exo: Mapping[str, np.ndarray] | None = None,
    ):
        assets = [a for a in streams if np.asarray(streams[a]).size >= window]
        if not assets:
            raise ValueError(f"no stream holds a window of {window} codes")
        self.codes = np.concatenate([np.asarray(streams[a], np.int32) for a in assets])
        self.exo = None if exo is None else np.concatenate([np.asarray(exo[a], np.float32) for a in assets])
        offsets = np.cumsum([0] + [np.asarray(streams[a]).size for a in assets])
        self.starts = np.concatenate(
            [offsets[i] + np.arange(np.asarray(streams[a]).size - window + 1) for i, a in enumerate(assets)]
        )
        self.window, self.batch_size, self.seed = window, batch_size, seed

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = self.starts[rng.integers(0, self.starts.size, self.batch_size)]
        index = starts[:, None] + np.arange(self.window)[None, :]
        batch = {"codes": self.codes[index]}
        if self.exo is not None:
            batch["exo"] = self.exo[index]
        return batch


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


def _same_run(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Resuming must not change what the run computes: the model, and the loop but for ``steps``."""
    for section in ("model", "train"):
        before, now = saved.get(section, {}), current.get(section, {})
        for name in sorted(set(before) | set(now)):
            if section == "train" and name in ("steps", "checkpoint_every", "keep_checkpoints", "log_every"):
                continue
            if before.get(name) != now.get(name):
                raise ConfigError(
                    f"{section}.{name}: is {now.get(name)!r} but the run being resumed used "
                    f"{before.get(name)!r}; resume with the same config or start a new folder"
                )


def run_train(
    config: TrainRunConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    *,
    data: CodeData,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the configured code model on ``data`` and write the run folder ``out_dir``.

    Raises:
        ConfigError: before training, naming the key, when the config does not fit the data.
    """
    train_config = config.train
    check_against_data(
        config,
        vocab_size=data.vocab_size,
        stream_lengths=stream_lengths(dict(data.train)),
        has_exo=data.exo_train is not None,
        max_code=data.max_code,
        available_devices=len(jax.devices()),
    )
    model_config = config.model.to_model_config()
    out = Path(out_dir)
    resolved = config.model_dump(mode="json")
    if resume and (out / CONFIG_FILE).is_file():
        _same_run(yaml.safe_load((out / CONFIG_FILE).read_text()) or {}, resolved)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / CONFIG_FILE, resolved)
    write_json(out / MODEL_CONFIG_FILE, config_to_json(model_config))

    # Every key of the run derives from the seed: the loop's from key(seed), the init from this.
    model = build_model(model_config, key=jax.random.fold_in(jax.random.key(train_config.seed), 1))
    segments = train_config.tbptt_segments
    window = model_config.context_length * segments + 1
    uses_exo = bool(getattr(model_config, "exo_clock", False))
    sampler = WindowSampler(
        data.train,
        window,
        train_config.batch_size,
        train_config.seed,
        exo=data.exo_train if uses_exo else None,
    )
    mesh = None
    if train_config.devices is not None:
        mesh = Mesh(np.asarray(jax.devices()[: train_config.devices]), ("data",))

    def loss_fn(model, batch, key):
        return code_loss(model, batch, key, segments=segments)

    result = train(
        model,
        loss_fn,
        sampler,
        train_config,
        out,
        resume=resume,
        mesh=mesh,
        tokens_per_step=train_config.batch_size * (window - 1),
        on_step=on_step,
        description=f"train {config.model.kind}",
    )
    buffer_path = out / MODEL_FILE
    atomic_write_bytes(buffer_path, _serialise(result.model))

    metrics: dict[str, Any] = {
        "model": config.model.kind,
        "params": count_params(result.model),
        "steps": result.step,
        "final_train_loss": result.history[-1]["loss"] if result.history else None,
    }
    if data.valid:
        heldout = evaluate_codes(
            result.model,
            data.valid,
            train=data.train,
            exo=data.exo_valid if uses_exo else None,
            exo_train=data.exo_train if uses_exo else None,
            segment_length=train_config.eval_segment,
        )
        metrics["heldout"] = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in heldout.items()
        }
    write_json(out / METRICS_FILE, metrics)
    write_meta(
        out,
        seed=train_config.seed,
        trained_through=trained_through_to_json(data.trained_through),
        extra={
            "kind": "code_model",
            "upstream_trained_through": trained_through_to_json(data.upstream_trained_through),
        },
    )
    result.metrics = metrics
    return result


def _serialise(model: eqx.Module) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


def load_run(run_dir: str | os.PathLike[str]) -> tuple[AbstractCodeModel, dict[str, Any]]:
    """The trained model of a run folder and its meta.json, after checking every file's hash.

    Raises:
        ArtifactError: naming a missing or damaged file.
    """
    root = Path(run_dir)
    meta = verify_run(root)
    config_path = root / MODEL_CONFIG_FILE
    try:
        model_config = config_from_json(json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ArtifactError(f"{config_path}: cannot be read as a model config ({error})") from None
    skeleton = build_model(model_config, key=jax.random.key(0))
    model_path = root / MODEL_FILE
    try:
        with open(model_path, "rb") as stream:
            model = eqx.tree_deserialise_leaves(stream, skeleton)
    except Exception as error:
        raise ArtifactError(
            f"{model_path}: cannot be restored into {type(skeleton).__name__} ({error})"
        ) from None
    return model, meta
