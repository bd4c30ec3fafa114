"""``chaosfm train --config FILE``: data -> tokenizer -> codes -> code model, in one run folder.

:class:`TrainRunFile` is the whole config file, four sections validated before anything slow
runs (a typo, a wrong type, a context longer than the data or a vocabulary that does not match
the tokenizer is a :class:`ConfigError` naming the key):

- ``data``: dataset names or paths, load options, the cutoff (or ``cutoff_fraction``), embargo;
  or ``shards``, a folder of ``chaosfm shard`` to read the training windows from (Grain over
  ArrayRecord, :mod:`chaosfm.jobs.shard`) instead of loading and encoding the data;
- ``tokenizer``: ``kind`` (``fsq``, ``vqvae``, ``bins``) with ``options`` (fields of its config
  dataclass) and ``steps`` of its fit; or ``path`` to a saved tokenizer folder;
- ``model`` and ``train``: as :class:`~chaosfm.train.TrainRunConfig` (``model.vocab_size`` may be
  left out: it is the tokenizer's);
- ``distributed``: how this process joins a multi-process run
  (:class:`~chaosfm.train.DistributedConfig`; unset: one process).

With several processes every process runs this same job from the same config: the tokenizer's fit
and the encoding are repeated on each (the same seed, the same codes), the loop splits each batch
between them, and only process 0 writes the run folder (which every process must see at the same
path when resuming).

A run has one seed, ``train.seed``: the tokenizer's fit, the model's initial weights, the batches
and the loop's keys all derive from it (:func:`chaosfm._random.run_keys`), and ``meta.json``
records it.

:func:`run` fits the tokenizer on the rows at or before the cutoff only (through a
:class:`~chaosfm.data.TimeFence`), encodes every asset (the tokenizer's code streams: bins are
scaled by each asset's *training* rows), and trains on the codes up to the cutoff, holding out the
codes after ``cutoff + embargo`` rows. The run folder gains ``tokenizer/`` (the fitted tokenizer)
and ``codes.json`` (how frames became code streams, read back by
:class:`~chaosfm.forecasters.TokenForecaster`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, write_json
from chaosfm._config import ConfigError, parse_config, read_config
from chaosfm._random import run_keys
from chaosfm.data import trained_through, trained_through_to_json
from chaosfm.jobs._common import (
    DEFAULT_CUTOFF_FRACTION,
    Cutoff,
    DatasetNames,
    ReadOptions,
    check_resume,
    finish_run,
    load_data,
    out_field,
    resolve_fence,
    run_location,
    write_config,
    write_loss_plot,
)
from chaosfm.models import config_to_json, count_params
from chaosfm.tokenizers import AbstractTokenizer, load_tokenizer, make_tokenizer
from chaosfm.train import (
    CODES_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    CodeData,
    ShardSet,
    DistributedConfig,
    TrainResult,
    TrainRunConfig,
    check_against_data,
    data_mesh,
    evaluate_codes,
    exo_series,
    exo_statistics,
    fit_code_model,
    initialize_distributed,
    is_main_process,
    parse_train_run_config,
    serialise,
    stream_lengths,
)

__all__ = ["FLAGS", "DataSection", "TokenizerSection", "TrainRunFile", "code_facts", "fenced_codes", "read", "run",
           "train_code_model"]

FLAGS = {"data": "data.names", "cutoff": "data.cutoff", "embargo": "data.embargo", "seed": "train.seed",
         "steps": "train.steps", **{key: f"data.{key}" for key in ReadOptions.model_fields},
         "coordinator": "distributed.coordinator", "num_processes": "distributed.num_processes",
         "process_id": "distributed.process_id", "shards": "data.shards"}
"""CLI flag -> config key."""


class DataSection(ReadOptions):
    """``data:``: what to train on and where the cutoff is."""

    model_config = ConfigDict(extra="forbid")

    names: DatasetNames = Field(description="built-in dataset names or CSV/Parquet paths (or one 'a,b' string)")
    options: dict[str, Any] = Field(default_factory=dict, description="options for chaosfm.data.load")
    cutoff: Cutoff = Field(None, description="last timestamp the tokenizer and model may see (or NAME=DATE,...)")
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    embargo: int = Field(0, ge=0, description="rows after the cutoff left out of the held-out codes")
    vol_window: int = Field(20, ge=2, description="rows of the realized volatility fed to exo_clock models")
    shards: str | None = Field(None, description="train from this shard folder of chaosfm shard (--shards)")
    read_threads: int = Field(2, ge=0, description="with shards: Grain's read threads per process")
    prefetch: int = Field(64, ge=0, description="with shards: windows Grain reads ahead per process (0: none)")



class TokenizerSection(BaseModel):
    """``tokenizer:``: a tokenizer to fit (``kind`` + ``options``) or a saved one (``path``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fsq", "vqvae", "bins"] | None = Field(None, description="tokenizer to fit")
    options: dict[str, Any] = Field(default_factory=dict, description="fields of its config dataclass")
    steps: int = Field(2000, ge=1, description="optimiser steps of the fit (FSQ, VQ-VAE)")
    seed: int | None = Field(
        None, description="must be the run's seed if given: the fit's key derives from the run's one seed"
    )
    path: str | None = Field(None, description="a saved tokenizer folder, instead of kind")

    def check(self, source: str, run_seed: int | None = None) -> None:
        """One of ``kind`` and ``path``; options only with ``kind``; the run's seed; a valid kind."""
        if (self.kind is None) == (self.path is None):
            raise ConfigError(f"{source}: key 'tokenizer': give exactly one of tokenizer.kind or tokenizer.path")
        if self.path is not None and self.options:
            raise ConfigError(f"{source}: key 'tokenizer.options': a saved tokenizer (tokenizer.path) takes no options")
        if self.seed is not None and run_seed is not None and self.seed != run_seed:
            raise ConfigError(
                f"{source}: key 'tokenizer.seed': {self.seed}, but the run's seed is {run_seed}; a run has one "
                "seed and every key derives from it (leave tokenizer.seed out)"
            )
        if self.kind is not None:
            make_tokenizer(self.kind, self.options)

    def build(self, *, train_rows: pd.DataFrame, fence: Any) -> tuple[AbstractTokenizer, bool]:
        """The tokenizer: loaded from ``path`` (checked against the fence; ``False``: not fitted here)
        or made from ``kind`` (unfitted; ``True``: the caller fits it with :meth:`fit`)."""
        if self.path is None:
            return make_tokenizer(self.kind, self.options), True
        tokenizer = load_tokenizer(self.path)
        check_saved_tokenizer(tokenizer, train_rows, fence, f"tokenizer.path {self.path}")
        return tokenizer, False

    def fit(self, tokenizer: AbstractTokenizer, train_rows: pd.DataFrame, fence: Any, seed: int) -> AbstractTokenizer:
        """Fit ``tokenizer`` on ``train_rows`` with the key of the run's ``seed``."""
        return tokenizer.fit(train_rows, key=run_keys(seed).tokenizer, steps=self.steps, fence=fence)


def check_saved_tokenizer(tokenizer: AbstractTokenizer, train_rows: pd.DataFrame, fence: Any, what: str) -> None:
    """A saved tokenizer must not have seen rows past the cutoff of any asset it is used on.

    Raises:
        LeakageError: naming ``what``, the asset and the timestamps.
    """
    assets = set(train_rows["asset"].astype(str))
    seen = {a: t for a, t in (tokenizer.trained_through or {}).items() if a in assets}
    fence.check_trained_through(seen, what)


class TrainRunFile(BaseModel):
    """The file ``chaosfm train --config FILE`` reads (and the run folder's ``config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    data: DataSection
    tokenizer: TokenizerSection
    model: dict[str, Any] = Field(description="model section (see TrainRunConfig)")
    train: dict[str, Any] = Field(default_factory=dict, description="training loop (see TrainConfig)")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="joining a multi-process run (unset: one process)"
    )
    out: Path | str = out_field("train", url=True)
    resume: bool = Field(False, description="continue from the run folder's newest checkpoint (--resume)")

    def run_config(self, vocab_size: int | None = None) -> TrainRunConfig:
        """The ``model`` + ``train`` sections as a :class:`TrainRunConfig`, ``vocab_size`` filled in."""
        model = dict(self.model)
        if vocab_size is not None:
            given = model.setdefault("vocab_size", vocab_size)
            if given != vocab_size:
                raise ConfigError(
                    f"model.vocab_size: {given!r} does not match the tokenizer's vocabulary of "
                    f"{vocab_size} codes (leave it out to use the tokenizer's)"
                )
        elif "vocab_size" not in model:
            model["vocab_size"] = 2  # stands in until the tokenizer is known, so the rest validates now
        return parse_train_run_config({"model": model, "train": self.train}, "config")

    @property
    def seed(self) -> int:
        """The run's one seed (``train.seed``)."""
        return self.run_config().train.seed

    def sections(self) -> dict[str, Any]:
        """The four sections as ``config.yaml`` records them (without ``out``, ``resume`` and
        ``distributed``: how a run is launched, not what it computes)."""
        return self.model_dump(mode="json", exclude={"out", "resume", "distributed"})


def parse_train_run_file(data: Any, source: str = "<config>") -> TrainRunFile:
    """Validate every section of a train config, without touching data; raise ConfigError naming the key."""
    config = parse_config(TrainRunFile, data, source)
    config.tokenizer.check(source, config.run_config().train.seed)
    return config


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> TrainRunFile:
    """The config file with flag ``overrides`` (dotted keys) on top, every section checked."""
    config = read_config(TrainRunFile, path, overrides)
    config.tokenizer.check(str(path or "flags"), config.run_config().train.seed)
    return config


def _same_sections(out: Path, config: TrainRunFile) -> None:
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    now = config.sections()
    # A run folder written before a key existed lacks it: the key's default is what that run used.
    fields = DataSection.model_fields
    now["data"] = {k: v for k, v in now["data"].items()
                   if k in (saved.get("data") or {}) or k not in fields or v != fields[k].default}
    for section in ("data", "tokenizer"):
        if section in saved and saved[section] != now[section]:
            raise ConfigError(
                f"{section}: differs from the run being resumed ({saved[section]} before, {now[section]} now); "
                "resume with the same config or start a new folder"
            )


def run(config: TrainRunFile, *, on_step: Any = None) -> dict[str, Any]:
    """Fit the tokenizer up to the cutoff, encode, train the code model, write the run folder
    ``config.out``; return ``metrics.json``. An fsspec URL ``out`` (``memory://``, ``s3://``...) is
    trained in a local work folder and copied there after each checkpoint and at the end
    (:func:`~chaosfm.jobs._common.run_location`); ``resume`` copies it down first.

    Raises:
        ConfigError, DataError: before training starts, naming the key or the data problem.
    """
    initialize_distributed(config.distributed)  # before any JAX computation
    writes = is_main_process()
    # A URL out: train in a local work folder, mirrored to the URL at each checkpoint and at the end.
    out, mirror = run_location(config.out, resume=config.resume, command="train", process=jax.process_index())
    resume = config.resume
    seed = config.seed
    loop = config.run_config().train
    data_mesh(loop.devices, loop.batch_size)  # devices that do not fit fail before the tokenizer's fit
    if resume:
        _same_sections(out, config)
    if config.data.shards is not None:
        from chaosfm.jobs.shard import train_from_shards  # chaosfm.jobs.shard imports this module

        return train_from_shards(config, out, mirror, on_step=on_step)
    saved_tokenizer = out / TOKENIZER_DIR
    tokenizer, data, layout, train_rows = fenced_codes(config, saved_tokenizer if resume else None)
    run_config = config.run_config(tokenizer.vocab_size)

    out.mkdir(parents=True, exist_ok=True)
    if writes:
        tokenizer.save(saved_tokenizer)
        write_json(out / CODES_FILE, layout)
    result = train_code_model(run_config, out, data, resume=resume, on_step=on_step, on_checkpoint=mirror)
    if not writes:
        return result.metrics | _run_metrics(config, tokenizer, train_rows, data)
    # config.yaml holds the whole file (train_code_model wrote its model and train sections).
    write_config(out, {**config.sections(), **run_config.model_dump(mode="json")})
    metrics = result.metrics | _run_metrics(config, tokenizer, train_rows, data)
    write_json(out / METRICS_FILE, metrics)
    finish_run(
        out, seed=seed, trained_through=trained_through_to_json(data.trained_through),
        kind="code_model", command="train",
        upstream_trained_through=trained_through_to_json(tokenizer.trained_through),
    )
    if mirror is not None:
        mirror()
    return metrics


def fenced_codes(
    config: TrainRunFile, saved_tokenizer: Path | None = None
) -> tuple[AbstractTokenizer, CodeData, dict[str, Any], pd.DataFrame]:
    """Load and fence the data, fit the tokenizer on the rows up to the cutoff (or load it from
    ``saved_tokenizer`` when that folder holds one: a resumed run's), encode: the tokenizer, the
    code streams, the ``codes.json`` layout and the training rows (what ``chaosfm shard`` writes
    from too).

    Raises:
        ConfigError, DataError: naming the key or the data problem.
    """
    frame = load_data(config.data.names, config.data.options, config.data)
    fence = resolve_fence(frame, config.data.cutoff, config.data.cutoff_fraction, config.data.embargo,
                          key="data.cutoff")
    train_rows = fence.train(frame)
    if saved_tokenizer is not None and (saved_tokenizer / "tokenizer.json").is_file():
        tokenizer, to_fit = load_tokenizer(saved_tokenizer), False
        check_saved_tokenizer(tokenizer, train_rows, fence, str(saved_tokenizer))
    else:
        tokenizer, to_fit = config.tokenizer.build(train_rows=train_rows, fence=fence)
    if to_fit:
        # Cheap bound on the training codes, so a context longer than the data fails before the fit.
        first = config.run_config(tokenizer.vocab_size)
        rows = int(train_rows.groupby("asset").size().max())
        longest = tokenizer.stream_length(rows, frame)
        window = first.model.context_length * first.train.tbptt_segments + 1
        if longest < window:
            raise ConfigError(
                f"model.context_length: {first.model.context_length} is longer than the data: a "
                f"window needs {window} codes, the longest training stream has at most {longest}"
            )
        config.tokenizer.fit(tokenizer, train_rows, fence, config.seed)
    data, layout, _ = code_data(tokenizer, frame, train_rows, config.data.embargo, config.data.vol_window)
    return tokenizer, data, layout, train_rows


def _run_metrics(config: TrainRunFile, tokenizer: AbstractTokenizer, train_rows: pd.DataFrame,
                 data: CodeData) -> dict[str, Any]:
    """What ``metrics.json`` adds to the code model's metrics: the data, cutoff, tokenizer, codes."""
    return {
        "data": list(config.data.names),
        "cutoff": trained_through_to_json(trained_through(train_rows)),
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "codes": {
            "train": int(sum(c.size for c in data.train.values())),
            "valid": int(sum(c.size for c in (data.valid or {}).values())),
        },
    }


def code_data(
    tokenizer: AbstractTokenizer,
    frame: pd.DataFrame,
    train_rows: pd.DataFrame,
    embargo: int,
    vol_window: int,
    *,
    layout: dict[str, Any] | None = None,
) -> tuple[CodeData, dict[str, Any], dict[str, np.ndarray]]:
    """Training and held-out code streams of ``frame`` with their exogenous series, the
    ``codes.json`` layout (target columns, exogenous statistics, stream scales of the training rows),
    and per asset the row each training code ends at.

    ``layout`` (a parent's) fixes the exogenous statistics instead of measuring them anew.
    """
    columns = list(tokenizer.target_columns)
    scales = tokenizer.stream_scales(train_rows)
    streams = tokenizer.code_streams(frame, scales)
    parts = {str(asset): part.reset_index(drop=True) for asset, part in frame.groupby("asset", sort=False)}
    counts = {str(a): int(n) for a, n in train_rows.groupby("asset", sort=False).size().items()}
    stats = (layout or {}).get("exo") or exo_statistics(
        {a: parts[a].iloc[:n] for a, n in counts.items()}, columns, vol_window
    )
    train_codes, valid_codes, exo_train, exo_valid, train_ends = {}, {}, {}, {}, {}
    for asset, (codes, ends) in streams.items():
        seen = counts.get(asset, 0)
        exo = exo_series(parts[asset], ends, columns, stats)
        is_train, is_valid = ends < seen, ends >= seen + embargo
        if is_train.any():
            train_codes[asset], exo_train[asset], train_ends[asset] = codes[is_train], exo[is_train], ends[is_train]
        if is_valid.any():
            valid_codes[asset], exo_valid[asset] = codes[is_valid], exo[is_valid]
    if not train_codes:
        raise ConfigError("data.cutoff: no codes at or before the cutoff")
    data = CodeData(
        train=train_codes,
        vocab_size=tokenizer.vocab_size,
        valid=valid_codes or None,
        exo_train=exo_train,
        exo_valid=exo_valid or None,
        trained_through=trained_through(train_rows),
        upstream_trained_through=tokenizer.trained_through,
    )
    new_layout = {
        "tokenizer": tokenizer.name,
        "columns": columns,
        "channels_per_row": tokenizer.channels_per_row,
        "patch": tokenizer.rows_per_code,
        "exo": stats,
        "bin_scales": None if scales is None else {a: np.asarray(s).tolist() for a, s in scales.items()},
    }
    return data, new_layout, train_ends


def code_facts(data: CodeData) -> dict[str, Any]:
    """What :func:`~chaosfm.train.check_against_data` checks a config against (a shard folder's
    ``index.json`` records it as ``data``)."""
    return {"vocab_size": int(data.vocab_size), "stream_lengths": stream_lengths(dict(data.train)),
            "has_exo": data.exo_train is not None, "max_code": int(data.max_code)}


def _same_run(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Resuming must not change what the run computes: the model, and the loop but for ``steps``."""
    check_resume(saved, current, sections=("model", "train"))


_CODE_LOSS = "cross-entropy (nats per code)"


def train_code_model(
    config: TrainRunConfig, out_dir: str | os.PathLike[str], data: CodeData | None, *, resume: bool = False,
    on_step: Any = None, on_checkpoint: Any = None, shards: ShardSet | None = None,
) -> TrainResult:
    """Train the configured code model on ``data`` and write its files into ``out_dir``:
    ``config.yaml`` (model and train), ``model_config.json``, ``model.eqx``, ``metrics.json`` (held-out
    codes scored beside the unigram baseline), ``log.jsonl``, ``loss.png``, ``checkpoints/`` and
    ``meta.json``.

    The last ``train.val_fraction`` of each training stream (codes at or before the cutoff) is kept
    out of the gradient; its loss is logged as ``val_loss`` every ``train.eval_every`` steps and
    drawn in ``loss.png`` with the training loss. ``on_checkpoint(step)`` is called after each
    checkpoint, once ``loss.png`` is redrawn (a run whose ``out`` is a URL mirrors itself there).
    With ``shards`` (and ``data`` None) the windows, held-out batch and ``trained_through`` are the
    shards' (``chaosfm shard``), and no codes after the cutoff are scored.

    Raises:
        ConfigError: before training, naming the key, when the config does not fit the data.
    """
    train_config = config.train
    facts = code_facts(data) if shards is None else shards.index["data"]
    check_against_data(config, **facts, available_devices=len(jax.devices()))
    mesh = data_mesh(train_config.devices, train_config.batch_size)
    model_config = config.model.to_model_config()
    out = Path(out_dir)
    resolved = config.model_dump(mode="json")
    writes = is_main_process()  # with several processes, only process 0 writes the run folder
    if resume and (out / CONFIG_FILE).is_file():
        _same_run(yaml.safe_load((out / CONFIG_FILE).read_text()) or {}, resolved)
    if writes:
        write_config(out, resolved)
        write_json(out / MODEL_CONFIG_FILE, config_to_json(model_config))

    def draw(step: int) -> None:
        write_loss_plot(out, loss_label=_CODE_LOSS, title=f"train {config.model.kind}")

    def checkpointed(step: int) -> None:
        draw(step)
        if on_checkpoint is not None:
            on_checkpoint(step)

    result = fit_code_model(config, data, out, resume=resume, mesh=mesh, on_step=on_step,
                            val_fraction=train_config.val_fraction, on_checkpoint=checkpointed, shards=shards)
    if writes:
        atomic_write_bytes(out / MODEL_FILE, serialise(result.model))
        draw(result.step)
    uses_exo = result.model.uses_exo
    metrics: dict[str, Any] = {
        "model": config.model.kind,
        "params": count_params(result.model),
        "steps": result.step,
        "final_train_loss": result.history[-1]["loss"] if result.history else None,
        "final_val_loss": next((e["val_loss"] for e in reversed(result.history) if "val_loss" in e), None),
    }
    if data is not None and data.valid:
        metrics["heldout"] = nan_to_none(evaluate_codes(
            result.model, data.valid, train=data.train,
            exo=data.exo_valid if uses_exo else None, exo_train=data.exo_train if uses_exo else None,
            segment_length=train_config.eval_segment,
        ))
    if writes:
        write_json(out / METRICS_FILE, metrics)
        fenced = (shards.index["trained_through"], shards.index["upstream_trained_through"]) if data is None else (
            trained_through_to_json(data.trained_through), trained_through_to_json(data.upstream_trained_through))
        finish_run(out, seed=train_config.seed, trained_through=fenced[0], kind="code_model",
                   upstream_trained_through=fenced[1])
    result.metrics = metrics
    return result
