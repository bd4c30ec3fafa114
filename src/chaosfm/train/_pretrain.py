"""``chaosfm pretrain``: self-supervised pretraining of a JEPA (with or without its flow head).

:class:`PretrainConfig` has three sections: ``data`` (datasets, the cutoff: one date, one per
asset, or a fraction of each asset's rows), ``model`` (fields of :class:`~chaosfm.models.JEPAConfig`)
and ``train`` (the loop's :class:`~chaosfm.train.TrainConfig`), and an optional fourth,
``tokenizer`` (a candle tokenizer to fit, or a saved one): with it the encoder reads one code per
candle, without it standardised candle features (:class:`~chaosfm.train.EncoderInputs`; scaler
and tokenizer see the training rows only). :func:`run_pretrain` trains with
:func:`chaosfm.train.train` (the EMA target follows through its ``post_update`` hook), checks for
collapse on held-out rows (after the cutoff and the embargo) and writes the run folder:
``config.yaml``, ``model_config.json``, ``scaler.json``, ``tokenizer/`` (codes only), ``model.eqx``,
``metrics.json``, ``log.jsonl``, ``checkpoints/`` and ``meta.json`` with ``trained_through``: the
last timestamp of every asset whose rows reached the encoder, and ``upstream_trained_through``,
the tokenizer's. :func:`load_pretrained` reads it back, checking hashes.
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
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosfm._artifacts import ArtifactError, atomic_write_bytes, verify_run, write_json, write_meta, write_yaml
from chaosfm._config import CommaList, ConfigError
from chaosfm.data import (
    DataError,
    TimeFence,
    load,
    trained_through,
    trained_through_from_json,
    trained_through_to_json,
)
from chaosfm.data._fence import as_timestamp_like
from chaosfm.models import JEPA, JEPAConfig, count_params, ema_post_update, jepa_loss
from chaosfm.train._config import TrainConfig
from chaosfm.train._encoder_inputs import (
    FEATURES,
    EncoderInputs,
    FeatureScaler,
    check_candle_tokenizer,
    feature_streams,
)
from chaosfm.train._loop import TrainResult, train
from chaosfm.train._tokenized import TokenizerSection, make_tokenizer

__all__ = ["PretrainConfig", "PretrainData", "embed_windows", "load_pretrained", "run_pretrain"]

CONFIG_FILE, MODEL_CONFIG_FILE, SCALER_FILE = "config.yaml", "model_config.json", "scaler.json"
MODEL_FILE, METRICS_FILE, TOKENIZER_DIR = "model.eqx", "metrics.json", "tokenizer"
_BEFORE_WINDOW_NORM = {"window_norm": False, "window_terms": False}


class PretrainData(BaseModel):
    """``data:``: what the encoder may see."""

    model_config = ConfigDict(extra="forbid")

    names: CommaList = Field(description="built-in market datasets or CSV/Parquet paths")
    cutoff: str | dict[str, str] | None = Field(
        None, description="last timestamp the encoder sees: one date, or one per asset"
    )
    cutoff_fraction: float = Field(0.8, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows")
    embargo: int = Field(5, ge=0, description="rows after the cutoff kept out of the held-out check")
    vol_window: int = Field(20, ge=2, description="rows of the realized-volatility feature")

    def fence(self, frame: pd.DataFrame) -> TimeFence:
        """The cutoff (and embargo) as a TimeFence over ``frame``'s assets."""
        example = frame["timestamp"].iloc[0]
        try:
            if isinstance(self.cutoff, dict):
                missing = sorted(set(frame["asset"].astype(str)) - set(self.cutoff))
                if missing:
                    raise ConfigError(f"data.cutoff: no cutoff for asset(s) {missing}")
                return TimeFence({a: as_timestamp_like(c, example) for a, c in self.cutoff.items()}, self.embargo)
            if self.cutoff is not None:
                return TimeFence(as_timestamp_like(self.cutoff, example), self.embargo)
        except DataError as error:
            raise ConfigError(f"data.cutoff: {error}") from None
        return TimeFence.at_fraction(frame, self.cutoff_fraction, self.embargo)


class PretrainConfig(BaseModel):
    """The file ``chaosfm pretrain --config`` reads."""

    model_config = ConfigDict(extra="forbid")

    data: PretrainData
    model: dict[str, Any] = Field(default_factory=dict, description="fields of JEPAConfig")
    train: TrainConfig = Field(default_factory=TrainConfig)
    tokenizer: TokenizerSection | None = Field(
        None, description="a candle tokenizer to fit (kind: fsq or vqvae) or load (path): the encoder reads its codes"
    )

    @field_validator("tokenizer")
    @classmethod
    def _one_source(cls, section: TokenizerSection | None) -> TokenizerSection | None:
        if section is None:
            return section
        if (section.kind is None) == (section.path is None):
            raise ValueError("give exactly one of tokenizer.kind or tokenizer.path")
        if section.path is not None and section.options:
            raise ValueError("a saved tokenizer (tokenizer.path) takes no options")
        if section.kind is not None:
            check_candle_tokenizer(make_tokenizer(section), "tokenizer")
        return section

    def jepa_config(self, vocab_size: int | None = None) -> JEPAConfig:
        """The model section as a JEPAConfig; ``vocab_size`` is the tokenizer's (a stand-in until
        it is fitted, 0 without one)."""
        allowed = {f.name for f in dataclasses.fields(JEPAConfig)} - {"n_features", "vocab_size"}
        unknown = sorted(set(self.model) - allowed)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        if vocab_size is None:
            vocab_size = 2 if self.tokenizer is not None else 0
        try:
            return JEPAConfig(n_features=len(FEATURES), vocab_size=vocab_size, **self.model)
        except (ValueError, TypeError) as error:
            raise ConfigError("; ".join(f"model.{p}" for p in str(error).split("; "))) from None


class _WindowSampler:
    """``sampler(step) -> {"features": (B, L, F)}`` (or ``{"codes": (B, L)}``), drawn uniformly
    over every stream, seeded by step."""

    def __init__(self, streams: Mapping[str, np.ndarray], window: int, batch_size: int, seed: int, name: str):
        usable = [a for a in streams if len(streams[a]) >= window]
        if not usable:
            longest = max((len(s) for s in streams.values()), default=0)
            raise ConfigError(
                f"model.context_length: {window} is longer than every training stream (longest {longest} rows)"
            )
        self.values = np.concatenate([streams[a] for a in usable])
        self.name = name
        offsets = np.cumsum([0] + [len(streams[a]) for a in usable])
        self.starts = np.concatenate(
            [offsets[i] + np.arange(len(streams[a]) - window + 1) for i, a in enumerate(usable)]
        )
        self.window, self.batch_size, self.seed = window, batch_size, seed

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = self.starts[rng.integers(0, self.starts.size, self.batch_size)]
        return {self.name: self.values[starts[:, None] + np.arange(self.window)[None, :]]}


@eqx.filter_jit
def _embed_batch(encoder: Any, windows: jax.Array) -> jax.Array:
    return jax.vmap(lambda w: encoder(w)[-1])(windows)


def embed_windows(
    encoder: Any, inputs: np.ndarray, ends: np.ndarray, window: int, *, chunk: int = 512
) -> np.ndarray:
    """Embedding at the last step of each window ``inputs[end - window + 1 : end + 1]``, ``(N, E)``.

    ``inputs`` is an :class:`EncoderStream`'s: features ``(T, F)`` or codes ``(T,)``.

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
        out.append(np.asarray(_embed_batch(encoder, jnp.asarray(inputs[index])))[: part.size])
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
        resume: continue from the folder's newest checkpoint (and its fitted tokenizer).

    Returns:
        The loop's result, with ``metrics`` (losses, held-out embedding spread against the VICReg
        target, ``collapsed``).

    Raises:
        ConfigError, DataError; LeakageError if a saved tokenizer saw rows past the cutoff.
    """
    config.jepa_config()  # a bad model key fails before any fitting
    if frame is None:
        frame = load(",".join(config.data.names))
    fence = config.data.fence(frame)
    train_rows = fence.train(frame)
    if len(train_rows) == 0:
        raise ConfigError(f"data.cutoff: no rows at or before the cutoff {fence.cutoff!s}")
    fence.check(train_rows, "JEPA pretraining")
    out = Path(out_dir)
    tokenizer = _tokenizer(config.tokenizer, train_rows, fence, out, resume)
    train_features = {a: v for a, (v, _) in feature_streams(train_rows, config.data.vol_window).items()}
    inputs = EncoderInputs(FeatureScaler.fit(train_features), config.data.vol_window, tokenizer)
    train_inputs = {a: stream.inputs for a, stream in inputs.streams(train_rows).items()}
    model_config = config.jepa_config(inputs.vocab_size)

    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / CONFIG_FILE, config.model_dump(mode="json"))
    write_json(out / MODEL_CONFIG_FILE, dataclasses.asdict(model_config))
    write_json(out / SCALER_FILE, inputs.scaler.to_json())
    if tokenizer is not None:
        tokenizer.save(out / TOKENIZER_DIR)
    tc = config.train
    model = JEPA(model_config, key=jax.random.fold_in(jax.random.key(tc.seed), 1))
    sampler = _WindowSampler(train_inputs, model_config.context_length, tc.batch_size, tc.seed, inputs.kind)
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
    metrics: dict[str, Any] = {
        "model": result.model.kind,
        "input": inputs.kind,
        "vocab_size": inputs.vocab_size or None,
        "params": count_params(result.model.encoder) + count_params(result.model.predictor)
        + (count_params(result.model.flow) if result.model.flow is not None else 0),
        "encoder_params": count_params(result.model.encoder),
        "steps": result.step,
        "final": {k: v for k, v in (result.history[-1] if result.history else {}).items() if k != "step"},
        "variance_target_std": model_config.variance_std,
        "heldout": _heldout_spread(result.model, frame, fence, inputs),
    }
    write_json(out / METRICS_FILE, metrics)
    write_meta(
        out,
        seed=tc.seed,
        trained_through=trained_through_to_json(trained_through(train_rows)),
        extra={
            "kind": "jepa",
            "model": result.model.kind,
            "cutoff": str(fence.cutoff),
            "input": inputs.kind,
            "upstream_trained_through": trained_through_to_json(inputs.upstream_trained_through),
        },
    )
    result.metrics = metrics
    return result


def _tokenizer(
    section: TokenizerSection | None, train_rows: pd.DataFrame, fence: TimeFence, out: Path, resume: bool
) -> Any:
    """The candle tokenizer the encoder reads (None: features): the run's own when resuming, a
    saved one (which must not have seen past the cutoff), or one fitted on the training rows."""
    if section is None:
        return None
    from chaosfm.tokenizers import load_tokenizer

    saved = out / TOKENIZER_DIR
    if resume and (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    if section.path is not None:
        tokenizer = load_tokenizer(section.path)
        check_candle_tokenizer(tokenizer, f"tokenizer.path {section.path}")
        assets = set(train_rows["asset"].astype(str))
        seen = {a: t for a, t in (tokenizer.trained_through or {}).items() if a in assets}
        fence.check_trained_through(seen, f"tokenizer.path {section.path}")
        return tokenizer
    tokenizer = make_tokenizer(section)
    return tokenizer.fit(train_rows, key=jax.random.key(section.seed), steps=section.steps, fence=fence)


def _heldout_spread(model: JEPA, frame: pd.DataFrame, fence: TimeFence, inputs: EncoderInputs) -> dict[str, Any]:
    """Per-dimension std of embeddings of windows ending after the cutoff and embargo (collapse check)."""
    window = model.config.context_length
    fresh = fence.fresh(frame)
    embeddings = []
    for asset, stream in inputs.streams(frame).items():
        keep = set(fresh.loc[fresh["asset"] == asset, "timestamp"])
        ends = np.array([i for i, s in enumerate(stream.stamps) if s in keep and i >= window - 1])
        if ends.size:
            embeddings.append(embed_windows(model.encoder, stream.inputs, ends, window))
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


def load_pretrained(run_dir: str | os.PathLike[str]) -> tuple[JEPA, EncoderInputs, dict[str, Any]]:
    """The JEPA, what its encoder reads (:class:`EncoderInputs`) and meta.json of a pretrain run
    (``trained_through`` and ``upstream_trained_through`` parsed).

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
        vol_window = int((yaml.safe_load((root / CONFIG_FILE).read_text()) or {}).get("data", {}).get("vol_window", 20))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as error:
        raise ArtifactError(f"{root}: config.yaml, model_config.json or scaler.json cannot be read ({error})") from None
    try:
        inputs = EncoderInputs.load(root, scaler, vol_window, TOKENIZER_DIR if model_config.reads_codes else None)
    except (OSError, ValueError, ConfigError) as error:
        raise ArtifactError(f"{root / TOKENIZER_DIR}: the encoder's tokenizer cannot be loaded ({error})") from None
    if inputs.vocab_size != model_config.vocab_size:
        raise ArtifactError(
            f"{root / TOKENIZER_DIR}: a tokenizer of {inputs.vocab_size} codes, but the encoder embeds {model_config.vocab_size}"
        )
    skeleton = JEPA(model_config, key=jax.random.key(0))
    try:
        with open(root / MODEL_FILE, "rb") as stream:
            model = eqx.tree_deserialise_leaves(stream, skeleton)
    except Exception as error:
        raise ArtifactError(f"{root / MODEL_FILE}: cannot be restored into a JEPA ({error})") from None
    meta = dict(meta)
    meta["trained_through"] = trained_through_from_json(meta.get("trained_through"))
    meta["upstream_trained_through"] = trained_through_from_json(meta.get("upstream_trained_through"))
    return model, inputs, meta
