"""``chaosfm pretrain``: self-supervised pretraining of a JEPA (with or without its flow head).

:class:`PretrainConfig` has three sections: ``data`` (datasets, the cutoff: one date, one per
asset, or a fraction of each asset's rows), ``model`` (fields of :class:`~chaosfm.models.JEPAConfig`)
and ``train`` (the loop's :class:`~chaosfm.train.TrainConfig`), and an optional fourth,
``tokenizer`` (a candle tokenizer to fit, or a saved one): with it the encoder reads one code per
candle (candles only: a close-only frame is refused), without it standardised features
(:class:`~chaosfm.train.EncoderInputs`; scaler and tokenizer see the training rows only): the
candle features on a frame with open, high and low, the close-only features on a close-only frame
such as ``sp500_stocks`` (:func:`~chaosfm.train.feature_set`; ``scaler.json`` records the set).
A run has one seed, ``train.seed``: the tokenizer's fit, the initial weights, the batches and the
loop's keys derive from it.

:func:`run` trains with :func:`chaosfm.train.train` (the EMA target follows through its
``post_update`` hook; ``train.devices`` spreads the batch over a device mesh), checks for collapse
on held-out rows (after the cutoff and the embargo) and writes the run folder: ``config.yaml``,
``model_config.json``, ``scaler.json``, ``tokenizer/`` (codes only), ``model.eqx``,
``metrics.json``, ``log.jsonl`` (with ``val_loss``: the loss on the last ``train.val_fraction`` of
the training rows, kept out of the gradient), ``loss.png``, ``checkpoints/`` and ``meta.json``
with ``trained_through``: the last timestamp of every asset whose rows reached the encoder, and
``upstream_trained_through``, the tokenizer's. :func:`chaosfm.train.load_pretrained` reads it back, checking hashes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosfm._artifacts import atomic_write_bytes, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm._random import run_keys
from chaosfm.data import TimeFence, require_ohlc, session_unit, trained_through, trained_through_to_json
from chaosfm.jobs._common import (
    DEFAULT_CUTOFF_FRACTION,
    Cutoff,
    DatasetNames,
    ReadOptions,
    finish_run,
    load_data,
    out_field,
    resolve_fence,
    write_config,
    write_loss_plot,
)
from chaosfm.jobs.train import TokenizerSection
from chaosfm.models import JEPA, JEPAConfig, count_params, ema_post_update, jepa_loss
from chaosfm.tokenizers import load_tokenizer, make_tokenizer
from chaosfm.train import (
    FEATURES,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    SCALER_FILE,
    TOKENIZER_DIR,
    EncoderInputs,
    FeatureScaler,
    TrainConfig,
    WindowSampler,
    check_candle_tokenizer,
    data_mesh,
    feature_set,
    feature_streams,
    heldout_spread,
    hold_out,
    serialise,
    train,
)

__all__ = ["FLAGS", "PretrainConfig", "PretrainData", "read", "run"]

FLAGS = {"data": "data.names", "cutoff": "data.cutoff", "embargo": "data.embargo", "seed": "train.seed",
         "steps": "train.steps", **{key: f"data.{key}" for key in ReadOptions.model_fields}}
"""CLI flag -> config key."""


class PretrainData(ReadOptions):
    """``data:``: what the encoder may see."""

    model_config = ConfigDict(extra="forbid")

    names: DatasetNames = Field(description="built-in market datasets or CSV/Parquet paths")
    cutoff: Cutoff = Field(None, description="last timestamp the encoder sees: one date, or one per asset")
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    embargo: int = Field(5, ge=0, description="rows after the cutoff kept out of the held-out check")
    vol_window: int = Field(20, ge=2, description="rows of the realized-volatility feature")
    features: Literal["candles", "close", "close+indicators"] | None = Field(
        None, description="the encoder's feature set (default: candles with open/high/low, else close)")

    def fence(self, frame: pd.DataFrame) -> TimeFence:
        """The cutoff (and embargo) as a TimeFence over ``frame``'s assets."""
        return resolve_fence(frame, self.cutoff, self.cutoff_fraction, self.embargo, key="data.cutoff")


class PretrainConfig(BaseModel):
    """The file ``chaosfm pretrain --config`` reads."""

    model_config = ConfigDict(extra="forbid")

    data: PretrainData
    model: dict[str, Any] = Field(default_factory=dict, description="fields of JEPAConfig")
    train: TrainConfig = Field(default_factory=TrainConfig)
    tokenizer: TokenizerSection | None = Field(
        None, description="a candle tokenizer to fit (kind: fsq or vqvae) or load (path): the encoder reads its codes"
    )
    out: Path = out_field("pretrain")
    resume: bool = Field(False, description="continue from the run folder's newest checkpoint (--resume)")

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
            check_candle_tokenizer(make_tokenizer(section.kind, section.options), "tokenizer")
        return section

    def jepa_config(
        self, vocab_size: int | None = None, features: tuple[str, ...] = FEATURES, clock_unit: float = 0.0
    ) -> JEPAConfig:
        """The model section as a JEPAConfig; ``vocab_size`` is the tokenizer's (a stand-in until
        it is fitted, 0 without one), ``features`` the data's feature set (the exo clock reads its
        ``realized_vol``), ``clock_unit`` the session clock's bar (0 until measured)."""
        allowed = {f.name for f in dataclasses.fields(JEPAConfig)} - {"n_features", "vocab_size", "exo_column",
                                                                      "clock_unit"}
        unknown = sorted(set(self.model) - allowed)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        if vocab_size is None:
            vocab_size = 2 if self.tokenizer is not None else 0
        try:
            # The exo clock's column only when it is on: a saved config then reads as before the key existed.
            exo_column = features.index("realized_vol") if self.model.get("exo_clock") else -1
            return JEPAConfig(n_features=len(features), vocab_size=vocab_size, exo_column=exo_column,
                              clock_unit=clock_unit, **self.model)
        except (ValueError, TypeError) as error:
            raise ConfigError("; ".join(f"model.{p}" for p in str(error).split("; "))) from None

    def check(self, source: str) -> None:
        """What validation of single keys cannot see: the model section, the run's one seed."""
        self.jepa_config()
        if self.tokenizer is not None:
            self.tokenizer.check(source, self.train.seed)


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """The config file with flag ``overrides`` (dotted keys) on top, every section checked."""
    config = read_config(PretrainConfig, path, overrides)
    config.check(str(path or "flags"))
    return config


def run(config: PretrainConfig, *, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Pretrain the configured JEPA on the rows at or before the cutoff; write the run folder
    ``config.out``; return ``metrics.json`` (losses, held-out embedding spread against the VICReg
    target, ``collapsed``).

    Args:
        config: the pretraining config.
        frame: the data (default: the datasets ``config.data.names`` name).

    Raises:
        ConfigError, DataError; LeakageError if a saved tokenizer saw rows past the cutoff.
    """
    config.check("config")
    if frame is None:
        frame = load_data(config.data.names, read=config.data)
    if config.tokenizer is not None:
        require_ohlc(frame, "JEPA pretraining on tokenizer codes (fsq and vqvae encode candles)")
    fence = config.data.fence(frame)
    train_rows = fence.train(frame)
    fence.check(train_rows, "JEPA pretraining")
    out, tc = Path(config.out), config.train
    mesh = data_mesh(tc.devices, tc.batch_size)
    tokenizer = _tokenizer(config.tokenizer, train_rows, fence, out, config.resume, tc.seed)
    features = feature_set(frame, config.data.features)
    train_streams = feature_streams(train_rows, config.data.vol_window, features)
    train_features = {asset: values for asset, (values, _) in train_streams.items()}
    session = str(config.model.get("session") or "")
    unit = _clock_unit(train_streams, session) if session else 0.0
    inputs = EncoderInputs(FeatureScaler.fit(train_features, features), config.data.vol_window, tokenizer,
                           session=session, clock_unit=unit)
    train_inputs = {a: {inputs.kind: stream.inputs} for a, stream in inputs.streams(train_rows).items()}
    model_config = config.jepa_config(inputs.vocab_size, features, unit)

    write_config(out, config.model_dump(mode="json", exclude={"out", "resume"}))
    write_json(out / MODEL_CONFIG_FILE, dataclasses.asdict(model_config))
    write_json(out / SCALER_FILE, inputs.scaler.to_json())
    if tokenizer is not None:
        tokenizer.save(out / TOKENIZER_DIR)
    model = JEPA(model_config, key=run_keys(tc.seed).init)
    label = f"pretrain {model.kind}"
    train_inputs, heldout = hold_out(train_inputs, tc.val_fraction, model_config.context_length, tc.batch_size,
                                     label=label)
    sampler = WindowSampler(train_inputs, model_config.context_length, tc.batch_size, tc.seed,
                            what="model.context_length")

    def draw(step: int) -> None:
        write_loss_plot(out, loss_label=_JEPA_LOSS, title=label)
    result = train(
        model,
        jepa_loss,
        sampler,
        tc,
        out,
        resume=config.resume,
        mesh=mesh,
        tokens_per_step=tc.batch_size * model_config.context_length,
        description=label,
        post_update=ema_post_update(model_config.ema_decay),
        heldout=heldout,
        on_checkpoint=draw,
    )
    atomic_write_bytes(out / MODEL_FILE, serialise(result.model))
    draw(result.step)
    metrics: dict[str, Any] = {
        "model": result.model.kind,
        "input": inputs.kind,
        "features": list(inputs.features),
        "vocab_size": inputs.vocab_size or None,
        "params": count_params(result.model.encoder) + count_params(result.model.predictor)
        + (count_params(result.model.flow) if result.model.flow is not None else 0),
        "encoder_params": count_params(result.model.encoder),
        "steps": result.step,
        "final": {k: v for k, v in (result.history[-1] if result.history else {}).items() if k != "step"},
        "variance_target_std": model_config.variance_std,
        "heldout": heldout_spread(result.model, frame, fence, inputs),
    }
    write_json(out / METRICS_FILE, metrics)
    finish_run(
        out,
        seed=tc.seed,
        trained_through=trained_through_to_json(trained_through(train_rows)),
        kind="jepa",
        model=result.model.kind,
        cutoff=str(fence.cutoff),
        input=inputs.kind,
        upstream_trained_through=trained_through_to_json(inputs.upstream_trained_through),
    )
    return metrics


def _clock_unit(streams: dict[str, tuple[np.ndarray, pd.Series]], session: str) -> float:
    """Seconds of market time per bar: the median over the training assets' own units."""
    try:
        return float(np.median([session_unit(stamps, session) for _, stamps in streams.values()]))
    except ValueError as error:
        raise ConfigError(f"model.session: {error}") from None


_JEPA_LOSS = "JEPA loss (prediction + VICReg terms, unitless)"


def _tokenizer(
    section: TokenizerSection | None, train_rows: pd.DataFrame, fence: TimeFence, out: Path, resume: bool, seed: int
) -> Any:
    """The candle tokenizer the encoder reads (None: features): the run's own when resuming, a
    saved one (which must not have seen past the cutoff), or one fitted on the training rows with
    the key of the run's seed."""
    if section is None:
        return None
    saved = out / TOKENIZER_DIR
    if resume and (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    tokenizer, to_fit = section.build(train_rows=train_rows, fence=fence)
    check_candle_tokenizer(tokenizer, f"tokenizer.path {section.path}" if section.path else "tokenizer")
    return section.fit(tokenizer, train_rows, fence, seed) if to_fit else tokenizer

