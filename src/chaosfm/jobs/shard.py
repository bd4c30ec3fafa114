"""``chaosfm shard --config TRAIN.yaml | --data ... --out DIR [--num-shards N]``: the training
windows of a ``chaosfm train`` config as ArrayRecord shards; and ``chaosfm train --shards DIR``,
training from them through Grain.

:func:`run` reads the data and fits the tokenizer exactly as ``chaosfm train`` does (the same
functions: :func:`~chaosfm.jobs.train.fenced_codes`, :func:`~chaosfm.train.code_windows`), then
writes into ``DIR``, built in a hidden temporary folder and renamed into place (an existing
``DIR`` is never overwritten):

- ``windows-0000i-of-0000N.array_record``: every window the in-memory sampler can draw, in its
  window order, one record each (:mod:`chaosfm.train` ``_shards``: raw little-endian arrays);
- ``heldout.array_record``: the held-out windows of ``train.val_fraction``;
- ``tokenizer/`` and ``codes.json``: the fitted tokenizer and how frames became codes;
- ``index.json``: records per file and their sha256, the record layout, the window, vocabulary,
  tokenizer (kind, config section, sha256 of its folder), seed, the ``model``/``train`` settings
  the windows depend on, ``trained_through`` per asset (the TimeFence of the windows) and versions.

:func:`train_from_shards` is ``chaosfm train`` with ``data.shards``: the shards are checked against
their index (a damaged file is named) and against the config (window, vocabulary, seed,
``val_fraction``: a mismatch is a :class:`ConfigError` naming both values), the run's
``trained_through`` is the index's, and the loop reads its batches through Grain in the in-memory
sampler's order, so the loss curve is that of the in-memory run of the same seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from chaosfm import __version__
from chaosfm._artifacts import ArtifactError, sha256, versions, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm.data import trained_through_to_json
from chaosfm.jobs._common import finish_run, out_field, write_config
from chaosfm.jobs.train import FLAGS as TRAIN_FLAGS
from chaosfm.jobs.train import TrainRunFile, code_facts, fenced_codes, train_code_model
from chaosfm.tokenizers import load_tokenizer
from chaosfm.train import (
    CODES_FILE,
    INDEX_FILE,
    METRICS_FILE,
    TOKENIZER_DIR,
    ShardSet,
    TrainRunConfig,
    check_against_data,
    code_windows,
    is_main_process,
    tokenizer_sha256,
    write_shards,
)

__all__ = ["FLAGS", "ShardRunFile", "check_index", "read", "run", "train_from_shards"]

FLAGS = {**{flag: key for flag, key in TRAIN_FLAGS.items() if key.startswith(("data.", "train."))
            and flag != "shards"}, "num_shards": "num_shards"}
"""CLI flag -> config key."""


class ShardRunFile(TrainRunFile):
    """The file ``chaosfm shard --config FILE`` reads: a ``chaosfm train`` config (the same file),
    with ``num_shards`` and ``out`` the shard folder."""

    model_config = ConfigDict(extra="forbid")

    out: Path = out_field("shard", "the shard folder")
    num_shards: int = Field(4, ge=1, description="ArrayRecord files the windows are spread over (--num-shards)")


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> ShardRunFile:
    """The config file with flag ``overrides`` (dotted keys) on top, every section checked."""
    config = read_config(ShardRunFile, path, overrides)
    config.tokenizer.check(str(path or "flags"), config.run_config().train.seed)
    return config


def _window_settings(run_config: TrainRunConfig) -> dict[str, Any]:
    """The settings the written windows depend on (the order depends on the reading run's seed
    and batch size, chosen when it reads)."""
    return {
        "window": run_config.model.context_length * run_config.train.tbptt_segments + 1,
        "context_length": run_config.model.context_length,
        "tbptt_segments": run_config.train.tbptt_segments,
        "val_fraction": run_config.train.val_fraction,
        "heldout_windows": run_config.train.batch_size,
    }


def run(config: ShardRunFile) -> dict[str, Any]:
    """Write the shard folder ``config.out``; return its ``index.json``.

    Raises:
        ConfigError: ``out`` exists, or the config does not fit the data (naming the key).
    """
    if config.data.shards is not None:
        raise ConfigError(f"data.shards: {config.data.shards!r}: chaosfm shard writes shards from data.names; "
                          "leave data.shards out")
    out = Path(config.out)
    if out.exists():
        raise ConfigError(f"out: {out} already exists; chaosfm shard never overwrites, choose a new folder")
    tokenizer, data, layout, _ = fenced_codes(config)
    run_config = config.run_config(tokenizer.vocab_size)
    facts = code_facts(data)
    check_against_data(run_config, **facts)
    sampler, heldout = code_windows(run_config, data, val_fraction=run_config.train.val_fraction, with_exo=True)
    if config.num_shards > sampler.windows:
        raise ConfigError(f"num_shards: {config.num_shards} files for {sampler.windows} windows; at most one per window")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save(temporary / TOKENIZER_DIR)
        write_json(temporary / CODES_FILE, layout)
        index = write_shards(temporary, sampler, heldout, num_shards=config.num_shards, fields={
            "vocab_size": int(tokenizer.vocab_size),
            "tokenizer": {"kind": tokenizer.name, "sha256": tokenizer_sha256(temporary / TOKENIZER_DIR),
                          "config": config.tokenizer.model_dump(mode="json")},
            "seed": config.seed,
            **_window_settings(run_config),
            "data": facts,
            "trained_through": trained_through_to_json(data.trained_through),
            "upstream_trained_through": trained_through_to_json(data.upstream_trained_through),
            "codes_sha256": sha256(temporary / CODES_FILE),
            "sections": config.sections(),
            "chaosfm_version": __version__,
            "versions": versions(),
        })
        os.rename(temporary, out)  # fails, leaving nothing half-written, if out appeared meanwhile
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return index


def check_index(index: dict[str, Any], run_config: TrainRunConfig, where: str) -> None:
    """The shards must hold the windows this config trains on.

    Raises:
        ConfigError: naming the key, the config's value and the index's.
    """
    now = _window_settings(run_config)
    for key, name in (("window", "model.context_length"), ("val_fraction", "train.val_fraction")):
        if index.get(key) != now[key]:
            shown = "window of context_length * train.tbptt_segments + 1 codes" if key == "window" else key
            raise ConfigError(f"{name}: the config's {shown} is {now[key]!r}, the shards' is {index.get(key)!r} "
                              f"({where}); write shards for this config with chaosfm shard")
    if index.get("seed") != run_config.train.seed:
        raise ConfigError(f"train.seed: the config's seed is {run_config.train.seed}, the shards were written with "
                          f"seed {index.get('seed')} ({where}; their tokenizer was fitted with it)")


def train_from_shards(config: TrainRunFile, out: Path, mirror: Any = None, *, on_step: Any = None) -> dict[str, Any]:
    """``chaosfm train`` from ``config.data.shards`` into the run folder ``out`` (``mirror()``,
    if given, copies it to a URL ``out`` after each checkpoint and at the end); return
    ``metrics.json``.

    Raises:
        ArtifactError: a shard file or the tokenizer folder does not match its hash (named).
        ConfigError: the config does not fit the shards (naming the key and both values).
    """
    shards = ShardSet(config.data.shards, read_threads=config.data.read_threads, prefetch=config.data.prefetch)
    index, where = shards.index, str(shards.folder / INDEX_FILE)
    tokenizer_dir = shards.folder / TOKENIZER_DIR
    if tokenizer_sha256(tokenizer_dir) != index["tokenizer"]["sha256"]:
        raise ArtifactError(f"{tokenizer_dir}: damaged (its sha256 does not match {where})")
    if sha256(shards.folder / CODES_FILE) != index.get("codes_sha256"):
        raise ArtifactError(f"{shards.folder / CODES_FILE}: damaged (its sha256 does not match {where})")
    tokenizer = load_tokenizer(tokenizer_dir)
    try:
        run_config = config.run_config(int(index["vocab_size"]))
    except ConfigError as error:
        raise ConfigError(f"{error} (the shards' vocabulary, {where})") from None
    check_index(index, run_config, where)
    writes = is_main_process()
    out.mkdir(parents=True, exist_ok=True)
    if writes:
        tokenizer.save(out / TOKENIZER_DIR)
        write_json(out / CODES_FILE, json.loads((shards.folder / CODES_FILE).read_text()))
    result = train_code_model(run_config, out, None, resume=config.resume, on_step=on_step, on_checkpoint=mirror,
                              shards=shards)
    metrics = result.metrics | {
        "data": list(config.data.names),
        "shards": str(shards.folder),
        "cutoff": index["trained_through"],
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "windows": shards.windows,
        "codes": {"train": int(sum(index["data"]["stream_lengths"].values()))},
    }
    if not writes:
        return metrics
    write_config(out, {**config.sections(), **run_config.model_dump(mode="json")})
    write_json(out / METRICS_FILE, metrics)
    finish_run(out, seed=config.seed, trained_through=index["trained_through"], kind="code_model", command="train",
               upstream_trained_through=index["upstream_trained_through"], shards=index["shards"])
    if mirror is not None:
        mirror()
    return metrics
