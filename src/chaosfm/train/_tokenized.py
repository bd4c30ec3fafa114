"""``chaosfm train --config FILE``: data -> tokenizer -> codes -> code model, in one run folder.

:class:`TrainRunFile` is the whole config file, four sections validated before anything slow
runs (a typo, a wrong type, a context longer than the data or a vocabulary that does not match
the tokenizer is a :class:`ConfigError` naming the key):

- ``data``: dataset names or paths, load options, the cutoff (or ``cutoff_fraction``), embargo;
- ``tokenizer``: ``kind`` (``fsq``, ``vqvae``, ``bins``) with ``options`` (fields of its config
  dataclass), ``steps`` and ``seed`` of its fit; or ``path`` to a saved tokenizer folder;
- ``model`` and ``train``: as :class:`~chaosfm.train.TrainRunConfig` (``model.vocab_size`` may be
  left out: it is the tokenizer's).

:func:`run_train_tokenized` fits the tokenizer on the rows at or before the cutoff only (through a
:class:`~chaosfm.data.TimeFence`), encodes every asset, and hands :func:`run_train` the codes up
to the cutoff as training streams and the codes after ``cutoff + embargo`` rows as held-out
streams. The run folder gains ``tokenizer/`` (the fitted tokenizer) and ``codes.json`` (how
frames became code streams, read back by :class:`~chaosfm.evaluate.TokenForecaster`).

How frames become one stream of codes per asset:

- candle tokenizers (FSQ, VQ-VAE): one code per patch of candles, in time order;
- bins: one code per row and channel, interleaved row by row (``x0 x1 x2 x0 x1 x2 ...``), each
  channel scaled by the mean-abs of that asset's *training* rows (no held-out value sets it).

The exogenous input for ``exo_clock`` models is, per code, the standardised log realized
volatility of the rows up to that code's last row (log close returns for candles, first
differences for trajectories, over ``vol_window`` rows), standardised with training-row
statistics only.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosfm._artifacts import write_json, write_meta, write_yaml
from chaosfm._config import CommaList, ConfigError, parse_config
from chaosfm.data import DataError, TimeFence, load, target_columns, trained_through, trained_through_to_json
from chaosfm.data._fence import as_timestamp_like
from chaosfm.train._codes import METRICS_FILE, CodeData, run_train
from chaosfm.train._config import TrainRunConfig, parse_train_run_config
from chaosfm.train._loop import TrainResult

__all__ = [
    "CODES_FILE",
    "TOKENIZER_DIR",
    "DataSection",
    "TokenizerSection",
    "TrainRunFile",
    "code_streams",
    "exo_series",
    "parse_train_run_file",
    "read_train_run_file",
    "run_train_tokenized",
]

CODES_FILE = "codes.json"
TOKENIZER_DIR = "tokenizer"


class DataSection(BaseModel):
    """``data:``: what to train on and where the cutoff is."""

    model_config = ConfigDict(extra="forbid")

    names: CommaList = Field(description="built-in dataset names or CSV/Parquet paths (or one 'a,b' string)")
    options: dict[str, Any] = Field(default_factory=dict, description="options for chaosfm.data.load")
    cutoff: str | float | None = Field(None, description="last timestamp the tokenizer and model may see")
    cutoff_fraction: float = Field(0.8, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows")
    embargo: int = Field(0, ge=0, description="rows after the cutoff left out of the held-out codes")
    vol_window: int = Field(20, ge=2, description="rows of the realized volatility fed to exo_clock models")

    @field_validator("names")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one dataset")
        return value


class TokenizerSection(BaseModel):
    """``tokenizer:``: a tokenizer to fit (``kind`` + ``options``) or a saved one (``path``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fsq", "vqvae", "bins"] | None = Field(None, description="tokenizer to fit")
    options: dict[str, Any] = Field(default_factory=dict, description="fields of its config dataclass")
    steps: int = Field(2000, ge=1, description="optimiser steps of the fit (FSQ, VQ-VAE)")
    seed: int = Field(0, description="key of the tokenizer's fit")
    path: str | None = Field(None, description="a saved tokenizer folder, instead of kind")


class TrainRunFile(BaseModel):
    """The file ``chaosfm train --config FILE`` reads."""

    model_config = ConfigDict(extra="forbid")

    data: DataSection
    tokenizer: TokenizerSection
    model: dict[str, Any] = Field(description="model section (see TrainRunConfig)")
    train: dict[str, Any] = Field(default_factory=dict, description="training loop (see TrainConfig)")

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


def parse_train_run_file(data: Any, source: str = "<config>") -> TrainRunFile:
    """Validate every section of a train config, without touching data; raise ConfigError naming the key."""
    config = parse_config(TrainRunFile, data, source)
    section = config.tokenizer
    if (section.kind is None) == (section.path is None):
        raise ConfigError(f"{source}: key 'tokenizer': give exactly one of tokenizer.kind or tokenizer.path")
    if section.path is not None and section.options:
        raise ConfigError(f"{source}: key 'tokenizer.options': a saved tokenizer (tokenizer.path) takes no options")
    config.run_config()
    if section.kind is not None:
        make_tokenizer(section)
    return config


def read_train_run_file(path: str | os.PathLike[str]) -> TrainRunFile:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    return parse_train_run_file(data, str(file))


def make_tokenizer(section: TokenizerSection) -> Any:
    """An unfitted tokenizer of ``section.kind`` with ``section.options``."""
    from chaosfm.tokenizers import BinConfig, BinTokenizer, FSQConfig, FSQTokenizer, VQVAEConfig, VQVAETokenizer

    kinds = {"fsq": (FSQTokenizer, FSQConfig), "vqvae": (VQVAETokenizer, VQVAEConfig), "bins": (BinTokenizer, BinConfig)}
    tokenizer_class, config_class = kinds[section.kind]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in section.options.items()}
    allowed = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"tokenizer.options: unknown key(s) {unknown} for a {section.kind} tokenizer; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    try:
        return tokenizer_class(config_class(**options))
    except ConfigError as error:
        raise ConfigError(f"tokenizer.options: {error}") from None


def _fence(frame: pd.DataFrame, data: DataSection) -> TimeFence:
    if data.cutoff is not None:
        try:
            return TimeFence(as_timestamp_like(data.cutoff, frame["timestamp"].iloc[0]), data.embargo)
        except DataError as error:
            raise ConfigError(f"data.cutoff: {error}") from None
    return TimeFence.at_fraction(frame, data.cutoff_fraction, data.embargo)


def is_bins(tokenizer: Any) -> bool:
    return getattr(tokenizer, "name", None) == "bins"


def code_streams(
    tokenizer: Any, frame: pd.DataFrame, scales: dict[str, np.ndarray] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per asset, the code stream and, per code, the row position (within the asset) it ends at.

    Args:
        tokenizer: a fitted tokenizer.
        frame: the rows to encode.
        scales: bins only: the per-asset channel scales (default: each asset's mean-abs in ``frame``).
    """
    out = {}
    for asset, rows, values in tokenizer.series(frame, "encode"):
        if is_bins(tokenizer):
            scale = None if scales is None else scales.get(asset)
            codes, _ = tokenizer.encode_values(values, scale=scale)  # (T, C)
            channels = codes.shape[1]
            stream = codes.reshape(-1)  # row by row, channels interleaved
            ends = np.repeat(np.arange(len(rows)), channels)
        else:
            stream = tokenizer.encode_series(values)
            patch = tokenizer.config.patch
            ends = np.arange(len(stream)) * patch + patch - 1
        out[asset] = (stream.astype(np.int32), ends)
    return out


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


def exo_series(part: pd.DataFrame, ends: np.ndarray, columns: list[str], stats: dict[str, float]) -> np.ndarray:
    """Standardised log realized volatility per code (``stats``: training ``mean``, ``std``, ``window``)."""
    raw = row_volatility(part, columns, int(stats["window"]))[ends]
    z = (raw - stats["mean"]) / stats["std"]
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)


def _value_columns(tokenizer: Any, frame: pd.DataFrame) -> list[str]:
    return list(tokenizer.columns) if is_bins(tokenizer) else ["close"]


def _same_sections(out: Path, config: TrainRunFile) -> None:
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    now = config.model_dump(mode="json")
    for section in ("data", "tokenizer"):
        if section in saved and saved[section] != now[section]:
            raise ConfigError(
                f"{section}: differs from the run being resumed ({saved[section]} before, {now[section]} now); "
                "resume with the same config or start a new folder"
            )


def run_train_tokenized(
    config: TrainRunFile, out_dir: str | os.PathLike[str], resume: bool = False, *, on_step: Any = None
) -> TrainResult:
    """Fit the tokenizer up to the cutoff, encode, train the code model, write the run folder.

    Raises:
        ConfigError, DataError: before training starts, naming the key or the data problem.
    """
    from chaosfm.tokenizers import load_tokenizer

    out = Path(out_dir)
    if resume:
        _same_sections(out, config)
    section = config.tokenizer
    saved_tokenizer = out / TOKENIZER_DIR
    if resume and (saved_tokenizer / "tokenizer.json").is_file():
        tokenizer, fitted = load_tokenizer(saved_tokenizer), True
    elif section.path is not None:
        tokenizer, fitted = load_tokenizer(section.path), True
    else:
        tokenizer, fitted = make_tokenizer(section), False
    frame = load(",".join(config.data.names), **config.data.options)
    fence = _fence(frame, config.data)
    before = fence.before(frame)
    train_rows = frame.loc[before].reset_index(drop=True)
    if len(train_rows) == 0:
        raise ConfigError(f"data.cutoff: no rows at or before the cutoff {fence.cutoff!r}")

    if fitted:
        # A saved tokenizer must not have seen held-out rows.
        assets = set(frame["asset"].astype(str))
        seen = {a: t for a, t in (tokenizer.trained_through or {}).items() if a in assets}
        fence.check_trained_through(seen, "tokenizer.path")
    else:
        # Cheap bound on the training codes, so a context longer than the data fails before the fit.
        first = config.run_config(tokenizer.vocab_size)
        if is_bins(tokenizer):
            per_row = len(tokenizer.config.columns or target_columns(frame))
        else:
            per_row = 1 / tokenizer.config.patch
        longest = int(train_rows.groupby("asset").size().max() * per_row)
        window = first.model.context_length * first.train.tbptt_segments + 1
        if longest < window:
            raise ConfigError(
                f"model.context_length: {first.model.context_length} is longer than the data: a "
                f"window needs {window} codes, the longest training stream has at most {longest}"
            )
        import jax

        tokenizer.fit(train_rows, key=jax.random.key(section.seed), steps=section.steps, fence=fence)
    run_config = config.run_config(tokenizer.vocab_size)

    columns = _value_columns(tokenizer, frame)
    scales = None
    if is_bins(tokenizer):
        from chaosfm.tokenizers import mean_abs_scale

        scales = {
            str(asset): mean_abs_scale(part[columns].to_numpy(np.float64))
            for asset, part in train_rows.groupby("asset", sort=False)
        }
    streams = code_streams(tokenizer, frame, scales)
    parts = {str(asset): part.reset_index(drop=True) for asset, part in frame.groupby("asset", sort=False)}
    train_counts = {str(a): int(n) for a, n in train_rows.groupby("asset", sort=False).size().items()}

    vol_train = np.concatenate(
        [row_volatility(parts[a].iloc[:n], columns, config.data.vol_window) for a, n in train_counts.items()]
    )
    vol_train = vol_train[np.isfinite(vol_train)]
    stats = {
        "mean": float(vol_train.mean()) if vol_train.size else 0.0,
        "std": float(max(vol_train.std(), 1e-6)) if vol_train.size else 1.0,
        "window": config.data.vol_window,
    }
    train_codes, valid_codes, exo_train, exo_valid = {}, {}, {}, {}
    for asset, (codes, ends) in streams.items():
        seen = train_counts.get(asset, 0)
        exo = exo_series(parts[asset], ends, columns, stats)
        is_train = ends < seen
        is_valid = ends >= seen + config.data.embargo
        if is_train.any():
            train_codes[asset], exo_train[asset] = codes[is_train], exo[is_train]
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
    if is_bins(tokenizer) and data.max_code >= tokenizer.vocab_size:  # pragma: no cover - tokenizer bug
        raise ConfigError("model.vocab_size: codes outside the tokenizer's vocabulary")

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(saved_tokenizer)
    write_json(out / CODES_FILE, {
        "tokenizer": tokenizer.name,
        "columns": columns,
        "channels_per_row": len(columns) if is_bins(tokenizer) else None,
        "patch": None if is_bins(tokenizer) else tokenizer.config.patch,
        "exo": stats,
        "bin_scales": None if scales is None else {a: s.tolist() for a, s in scales.items()},
    })
    result = run_train(run_config, out, resume, data=data, on_step=on_step)

    # config.yaml holds the whole file (run_train wrote its model and train sections).
    resolved = config.model_dump(mode="json")
    resolved.update(run_config.model_dump(mode="json"))
    write_yaml(out / "config.yaml", resolved)
    metrics = dict(result.metrics)
    metrics.update({
        "data": list(config.data.names),
        "cutoff": trained_through_to_json(trained_through(train_rows)),
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "codes": {
            "train": int(sum(c.size for c in train_codes.values())),
            "valid": int(sum(c.size for c in valid_codes.values())),
        },
    })
    write_json(out / METRICS_FILE, metrics)
    write_meta(
        out,
        seed=run_config.train.seed,
        trained_through=trained_through_to_json(data.trained_through),
        extra={
            "kind": "code_model",
            "command": "train",
            "upstream_trained_through": trained_through_to_json(tokenizer.trained_through),
        },
    )
    result.metrics = metrics
    return result
