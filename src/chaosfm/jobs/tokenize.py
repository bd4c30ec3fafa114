"""``chaosfm tokenize``, ``chaosfm tokenize inspect`` and ``chaosfm tokenize analyze``.

:func:`run` loads data, splits it at a cutoff with a :class:`~chaosfm.data.TimeFence`, fits a
tokenizer on the rows before it, measures its health on both sides and writes a run folder:

- ``config.yaml``: the resolved :class:`TokenizeConfig`;
- ``tokenizer.json``, ``model.eqx``: the fitted tokenizer (``load_tokenizer(run_dir)`` reads it);
- ``metrics.json``: the health numbers (see ``_health.py``), data, cutoff and timings;
- ``code_counts.json``: how often each code occurs on training and held-out rows;
- ``example.json``: a held-out window of the tokenised values beside their reconstruction;
- ``log.jsonl``: the training loss every few steps, and ``val_loss``: the loss on the last
  ``val_fraction`` of each asset's training rows, kept out of the gradient (every ``eval_every``
  steps, before the first and after the last);
- ``loss.png``: both against step (FSQ, VQ-VAE; bins do not train by gradient);
- ``meta.json``: versions, seed, ``trained_through`` and the sha256 of every file.

:func:`inspect` checks those hashes, reloads the tokenizer, and writes ``inspect.png`` (code
usage, and the example window reconstructed beside the original).

:func:`analyze` encodes a run's data (or other data) with its tokenizer and writes an analysis
folder (default ``RUN/analysis``): ``analysis.json`` (code spread, rare codes and what they decode
to, the top patterns), ``patterns.csv`` (code n-grams with the forward-move statistics on
training rows and on fresh rows, classified by the leakage protocol), ``config.yaml`` and
``meta.json``.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text, nan_to_none, verify_run, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm._progress import say
from chaosfm._random import run_keys
from chaosfm.data import DataError, TimeFence, trained_through_to_json
from chaosfm.evaluate import bootstrap_interval, window_class_at
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
from chaosfm.tokenizers import (
    AbstractTokenizer,
    CodeStream,
    code_distribution,
    code_values,
    encodable,
    forward_returns,
    health_table,
    load_tokenizer,
    make_tokenizer,
    pattern_stats,
    rare_codes,
    tokenizer_health,
)

_EXAMPLE_ROWS = 250


class TokenizeConfig(ReadOptions):
    """``chaosfm tokenize``: which data, which tokenizer, where the cutoff is, where to write.

    Fields that do not apply to the chosen tokenizer (``levels`` for VQ-VAE, ``codebook`` for FSQ)
    are ignored. ``options`` sets any other field of the tokenizer's config dataclass
    (``FSQConfig``, ``VQVAEConfig``, ``BinConfig``), e.g. ``{"width": 32, "window": 128}``.
    """

    model_config = ConfigDict(extra="forbid")

    data: DatasetNames = Field(description="built-in dataset names or file paths (or one 'a,b' string)")
    data_options: dict[str, Any] = Field(default_factory=dict, description="options for data.load")
    tokenizer: Literal["fsq", "vqvae", "bins"] = "fsq"
    levels: list[int] = Field(default_factory=lambda: [8, 8, 4, 4], description="FSQ levels per dimension")
    codebook: int = Field(512, description="VQ-VAE codebook entries")
    patch: int = Field(1, description="candles per code (FSQ, VQ-VAE)")
    restarts: bool = Field(True, description="VQ-VAE: restart dead codes from recent encoder outputs")
    bins: Literal["uniform", "quantile"] = Field("uniform", description="bin tokenizer kind")
    vocab_size: int = Field(4096, description="bin tokenizer codes, PAD and EOS included")
    options: dict[str, Any] = Field(default_factory=dict, description="other tokenizer config fields")
    steps: int = Field(2000, ge=1, description="optimiser steps (FSQ, VQ-VAE)")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="last fraction of each asset's training rows kept out of the gradient "
        "for the held-out loss (FSQ, VQ-VAE); 0: none"
    )
    eval_every: int | None = Field(
        None, gt=0, description="steps between held-out losses; null: a tenth of steps (at least 1)"
    )
    cutoff: Cutoff = Field(None, description="last timestamp fitting may see (one, or NAME=DATE per asset)")
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    seed: int = 0
    speed_repeats: int = Field(5, ge=1, description="timed encoding runs for encode_candles_per_second")
    out: Path = out_field("tokenize")



def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TokenizeConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top."""
    return read_config(TokenizeConfig, path, overrides)


def tokenizer_of(config: TokenizeConfig) -> AbstractTokenizer:
    """An unfitted tokenizer as ``config`` describes it (the flags mapped onto the registry's
    kind and options).

    Raises:
        ConfigError: a bad setting (a level below 2, a codebook of size 0, an unknown option).
    """
    flags: dict[str, dict[str, Any]] = {
        "fsq": {"levels": list(config.levels), "patch": config.patch},
        "vqvae": {"codebook_size": config.codebook, "patch": config.patch, "restarts": config.restarts},
        "bins": {"vocab_size": config.vocab_size, "kind": config.bins},
    }
    return make_tokenizer(config.tokenizer, {**flags[config.tokenizer], **config.options}, source="tokenizer")


def run(config: TokenizeConfig) -> dict[str, Any]:
    """Fit a tokenizer up to a cutoff, measure its health, write the run folder; return the metrics.

    The folder is created only once the tokenizer is fitted: bad settings or data raise before
    anything is written.

    Raises:
        ConfigError, DataError: bad settings or data, before anything is trained or written.
    """
    tokenizer = tokenizer_of(config)
    frame = load_data(config.data, config.data_options, config)
    fence = resolve_fence(frame, config.cutoff, config.cutoff_fraction)
    before = fence.before(frame)
    train = frame.loc[before].reset_index(drop=True)
    held_out = frame.loc[~before].reset_index(drop=True)
    started = time.perf_counter()
    tokenizer.fit(train, key=run_keys(config.seed).tokenizer, steps=config.steps, fence=fence,
                  val_fraction=config.val_fraction, eval_every=config.eval_every)
    fit_seconds = time.perf_counter() - started
    health = tokenizer_health(tokenizer, train, held_out, repeats=config.speed_repeats)
    counts = health.pop("code_counts")
    metrics = {
        **health,
        "data": list(config.data),
        "cutoff": {str(k): str(v) for k, v in _cutoffs(fence, train).items()},
        "rows": {"train": len(train), "held_out": len(held_out)},
        "fit_seconds": round(fit_seconds, 2),
        "steps": config.steps if tokenizer.learns_by_gradient else 0,
        "trained_through": trained_through_to_json(tokenizer.trained_through),
    }
    metrics = nan_to_none(metrics)
    out = Path(config.out)
    write_config(out, config)
    tokenizer.save(out)
    write_json(out / "code_counts.json", counts)
    shown = encodable(tokenizer, held_out)[0]
    write_json(out / "example.json", _example(tokenizer, shown if len(shown) else train))
    history = getattr(tokenizer, "history", [])
    atomic_write_text(out / "log.jsonl", "".join(json.dumps(record) + "\n" for record in history))
    write_loss_plot(out, loss_label="reconstruction MSE + quantizer loss (standardised units²)",
                    title=f"tokenize {tokenizer.name}")
    write_json(out / "metrics.json", metrics)
    finish_run(
        out, seed=config.seed, trained_through=trained_through_to_json(tokenizer.trained_through),
        command="tokenize", tokenizer=tokenizer.name,
    )
    say(f"wrote {out / 'metrics.json'} and the tokenizer in {out}")
    return metrics


def inspect(run_dir: str | Path) -> dict[str, Any]:
    """Check a tokenize run folder, reload its tokenizer and write ``inspect.png`` into it.

    Returns:
        ``metrics`` (metrics.json), ``table`` (the health table, a DataFrame), ``plot`` (path).

    Raises:
        ArtifactError: a file is missing or does not match its hash in meta.json.
    """
    root = Path(run_dir)
    meta = verify_run(root)
    if meta.get("command") != "tokenize":
        raise ConfigError(f"{root}: not a tokenize run (meta.json says command={meta.get('command')!r})")
    tokenizer = load_tokenizer(root)
    metrics = json.loads((root / "metrics.json").read_text())
    counts = json.loads((root / "code_counts.json").read_text())
    example = json.loads((root / "example.json").read_text())
    plot = root / "inspect.png"
    atomic_write_bytes(plot, _plot(metrics, counts, example, tokenizer.special_tokens))
    return {"metrics": metrics, "table": health_table(metrics), "plot": str(plot)}


class AnalyzeConfig(ReadOptions):
    """``chaosfm tokenize analyze``: which tokenizer run, which data, how far patterns look."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a tokenize run folder")
    data: DatasetNames | None = Field(None, description="data to encode (default: the run's own data)")
    data_options: dict[str, Any] | None = Field(None, description="options for data.load (default: the run's)")
    top_k: int = Field(20, ge=1, description="codes counted in top-k coverage, and patterns kept per n")
    ngram: int = Field(3, ge=1, description="longest code pattern (patterns of 1 .. ngram codes)")
    horizon: int = Field(5, ge=1, description="rows after a pattern over which its forward move is taken")
    embargo: int | None = Field(None, ge=0, description="rows after trained_through not yet fresh (default: horizon)")
    min_count: int = Field(10, ge=1, description="training occurrences a pattern needs to be ranked")
    rare_factor: float = Field(10.0, gt=0, description="a code is rare below 1 / (rare_factor * data codes)")
    seed: int = Field(0, description="seed of the bootstrap intervals")
    out: Path | None = Field(None, description="analysis folder (default: RUN/analysis)")


def read_analysis(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AnalyzeConfig:
    """The analysis config file (optional) with flag ``overrides`` (dotted keys) on top."""
    return read_config(AnalyzeConfig, path, overrides)


def analyze(config: AnalyzeConfig) -> dict[str, Any]:
    """Encode data with a tokenize run's tokenizer and analyse its codes; write the analysis folder.

    Rows at or before the tokenizer's ``trained_through`` and the rows after it are encoded as two
    frames (as the health report does), so no code of one side depends on the other. A pattern
    occurrence is a training one when it and its forward move lie at or before ``trained_through``
    (:func:`~chaosfm.evaluate.window_class_at` says ``within_pretrain`` at the move's last row),
    a fresh one when its first row is ``fresh`` (after ``trained_through`` and the embargo).

    Returns:
        ``analysis`` (what analysis.json holds), ``patterns`` and ``rare`` (DataFrames), ``out``.

    Raises:
        ArtifactError: a file of the run is missing or damaged.
        ConfigError: the folder is not a tokenize run.
        DataError: the data cannot be encoded, or has no rows.
    """
    root = Path(config.run)
    meta = verify_run(root)
    if meta.get("command") != "tokenize":
        raise ConfigError(f"{root}: not a tokenize run (meta.json says command={meta.get('command')!r})")
    saved = read(root / "config.yaml")
    tokenizer = load_tokenizer(root)
    names = list(config.data) if config.data else list(saved.data)
    options = config.data_options if config.data_options is not None else (
        {} if config.data else saved.data_options)
    frame = load_data(names, options, config if config.data else saved)
    embargo = config.horizon if config.embargo is None else config.embargo
    seen = tokenizer.trained_through or {}
    before = np.zeros(len(frame), dtype=bool)
    for asset, last in seen.items():
        before |= ((frame["asset"] == asset) & (frame["timestamp"] <= last)).to_numpy()
    parts = {"train": frame.loc[before].reset_index(drop=True), "after": frame.loc[~before].reset_index(drop=True)}
    encoded = {side: _encoded(tokenizer, part) for side, part in parts.items()}
    if all(e is None for e in encoded.values()):
        raise DataError(f"{', '.join(names)}: no asset has enough rows to encode", rule="encodable rows")
    streams, rows = [], []
    for side in ("train", "after"):
        if encoded[side] is not None:
            side_streams, side_rows = _streams(tokenizer, frame, encoded[side], config.horizon, embargo)
            streams += side_streams
            rows.append(side_rows.assign(side=side))
    table = pd.concat(rows, ignore_index=True)
    vocab, special = tokenizer.vocab_size, tokenizer.special_tokens
    spread = {"all": code_distribution(table["code"], vocab, special, config.top_k)}
    for side in ("train", "after"):
        codes = table.loc[table["side"] == side, "code"]
        spread[side] = code_distribution(codes, vocab, special, config.top_k) if len(codes) else None
    patterns = pattern_stats(
        streams, config.ngram, top_k=config.top_k, min_count=config.min_count,
        interval=lambda values: bootstrap_interval([values], seed=config.seed),
    )
    counts = np.bincount(table["code"].to_numpy(np.int64), minlength=vocab)[:vocab]
    rare = rare_codes(counts, special, config.rare_factor)
    value_columns = [c for c in table.columns if c.startswith("value:")]
    decoded = table[value_columns].rename(columns=lambda c: c[len("value:"):])
    truth = table[[c.replace("value:", "true:") for c in value_columns]].rename(columns=lambda c: c[len("true:"):])
    rare = rare.merge(code_values(table["code"], decoded, truth, rare["code"].tolist()).drop(columns="rows"),
                      on="code", how="left")
    classes = table.groupby("side").agg(codes=("code", "size"), train=("train_end", "sum"),
                                        fresh=("fresh_start", "sum"))
    analysis = nan_to_none({
        "run": str(root),
        "tokenizer": tokenizer.name,
        "data": names,
        "vocab_size": vocab,
        "special_tokens": special,
        "trained_through": trained_through_to_json(seen),
        "horizon": config.horizon,
        "embargo": embargo,
        "move": "log return" if bool(table["log_move"].all()) else "difference (a series is not positive)",
        "codes_by_class": {
            "train": int(classes["train"].sum()),
            "fresh": int(classes["fresh"].sum()),
            "all": int(len(table)),
        },
        "distribution": spread,
        "rare_codes": rare.to_dict(orient="records"),
        "rare_threshold": 1.0 / (config.rare_factor * (vocab - special)),
        "patterns": patterns.to_dict(orient="records"),
    })
    out = Path(config.out) if config.out is not None else root / "analysis"
    write_config(out, config)
    write_json(out / "analysis.json", analysis)
    atomic_write_text(out / "patterns.csv", patterns.to_csv(index=False))
    finish_run(out, seed=config.seed, trained_through=trained_through_to_json(seen), command="tokenize analyze")
    say(f"wrote {out / 'analysis.json'} and {out / 'patterns.csv'}")
    return {"analysis": analysis, "patterns": patterns, "rare": rare, "out": str(out)}


def distribution_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """The code spread of an analysis as rows ``quantity, train, after, all`` for printing."""
    spread = analysis["distribution"]
    quantities = ("codes", "top_k_coverage", "entropy_bits", "perplexity", "codebook_usage", "used_codes")
    return pd.DataFrame([
        {"quantity": q, **{side: (spread[side] or {}).get(q) for side in ("train", "after", "all")}}
        for q in quantities
    ])


# --- helpers ----------------------------------------------------------------------------------


def _cutoffs(fence: TimeFence, train: pd.DataFrame) -> dict[str, Any]:
    if isinstance(fence.cutoff, dict):
        return fence.cutoff
    return {str(asset): fence.cutoff for asset in train["asset"].unique()}


def _example(tokenizer: AbstractTokenizer, frame: pd.DataFrame) -> dict[str, Any]:
    """The first asset's first ``_EXAMPLE_ROWS`` fully defined rows, original and reconstructed."""
    first = frame["asset"].iloc[0]
    part = frame.loc[frame["asset"] == first].reset_index(drop=True)
    names = list(tokenizer.value_names)
    truth = tokenizer.targets(part)
    recon = tokenizer.reconstruct(part)
    keep = np.isfinite(truth[names].to_numpy()).all(axis=1) & np.isfinite(recon[names].to_numpy()).all(axis=1)
    rows = np.flatnonzero(keep)[:_EXAMPLE_ROWS]
    return {
        "asset": str(first),
        "timestamps": part["timestamp"].iloc[rows].astype(str).tolist(),
        "names": names,
        "original": truth.loc[rows, names].to_numpy().tolist(),
        "reconstruction": recon.loc[rows, names].to_numpy().tolist(),
    }


def _plot(metrics: dict[str, Any], counts: dict[str, list[int]], example: dict[str, Any], special: int) -> bytes:
    from matplotlib.figure import Figure

    names = example["names"][:4]
    figure = Figure(figsize=(10, 2.6 * (1 + len(names))), layout="constrained")
    axes = figure.subplots(1 + len(names), 1, squeeze=False)[:, 0]
    usage = axes[0]
    for split, colour in (("train", "#0072b2"), ("held_out", "#e69f00")):
        data = np.sort(np.asarray(counts.get(split, []), dtype=float)[special:])[::-1]
        if data.sum() == 0:
            continue
        used = metrics["codebook_usage"].get(split)
        label = f"{split}: usage {used:.2f}, perplexity {metrics['perplexity'].get(split):.0f}"
        usage.plot(np.arange(1, len(data) + 1), data / data.sum(), color=colour, label=label)
    usage.set_yscale("log")
    usage.set_xlabel("code rank")
    usage.set_ylabel("share of codes")
    usage.set_title(f"{metrics['tokenizer']}: code usage ({metrics['vocab_size']} codes)")
    usage.legend(fontsize=8)
    original = np.asarray(example["original"], dtype=float)
    recon = np.asarray(example["reconstruction"], dtype=float)
    steps = np.arange(len(original))
    for i, (axis, name) in enumerate(zip(axes[1:], names)):
        if len(original):
            axis.plot(steps, original[:, i], color="black", linewidth=0.9, label="original")
            axis.plot(steps, recon[:, i], color="#d55e00", linewidth=0.9, label="decode(encode(x))")
        axis.set_ylabel(name)
        axis.legend(fontsize=7, loc="upper right")
    axes[1].set_title(f"held-out window of {example['asset']} from {(example['timestamps'] or ['-'])[0]}")
    axes[-1].set_xlabel("row")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _encoded(tokenizer: AbstractTokenizer, part: pd.DataFrame) -> dict[str, pd.DataFrame] | None:
    """Tokens, decoded values and true values of ``part`` (None when nothing of it is encodable)."""
    part = encodable(tokenizer, part)[0] if len(part) else part
    if not len(part):
        return None
    return {"tokens": tokenizer.tokens(part), "decoded": tokenizer.reconstruct(part), "truth": tokenizer.targets(part)}


def _streams(
    tokenizer: AbstractTokenizer, frame: pd.DataFrame, encoded: dict[str, pd.DataFrame], horizon: int, embargo: int
) -> tuple[list[CodeStream], pd.DataFrame]:
    """One :class:`CodeStream` per asset (and channel) of ``encoded``, and one row per code:
    ``code, train_end, fresh_start, log_move`` and the decoded (``value:*``) and true (``true:*``) values."""
    tokens, decoded, truth = encoded["tokens"], encoded["decoded"], encoded["truth"]
    per_code = tokenizer.rows_per_code or 1
    upstream = [tokenizer.trained_through]
    channelled = "channel" in tokens.columns
    keys = ["asset", "channel"] if channelled else ["asset"]
    names = list(tokenizer.value_names)
    streams, rows = [], []
    for key, group in tokens.groupby(keys, sort=False):
        asset = str(key[0] if isinstance(key, tuple) else key)
        column = str(key[1]) if channelled else tokenizer.target_columns[0]
        series = frame.loc[frame["asset"] == asset]
        stamps = series["timestamp"].to_numpy()
        positions = np.searchsorted(stamps, group["timestamp"].to_numpy())
        values = series[column].to_numpy(np.float64)
        log = bool((values > 0).all())  # a log return where the series allows one
        move = forward_returns(values, horizon, log=log)
        end = positions + horizon
        train_end = np.array([
            e < len(stamps) and window_class_at(stamps, stamps[e], asset, None, upstream, embargo) == "within_pretrain"
            for e in end
        ], dtype=bool)
        first = np.maximum(positions - (per_code - 1), 0)
        fresh_start = np.array([
            window_class_at(stamps, stamps[f], asset, None, upstream, embargo) == "fresh" for f in first
        ], dtype=bool)
        codes = group["code"].to_numpy(np.int64)
        streams.append(CodeStream(codes, move[positions], train_end, fresh_start))
        shown = [column] if channelled else names
        at = pd.DataFrame({"asset": asset, "timestamp": group["timestamp"].to_numpy()})
        decoded_rows = at.merge(decoded, on=["asset", "timestamp"], how="left")
        truth_rows = at.merge(truth, on=["asset", "timestamp"], how="left")
        row = pd.DataFrame({"code": codes, "train_end": train_end, "fresh_start": fresh_start, "log_move": log})
        for name in shown:
            label = "value" if channelled else name
            row[f"value:{label}"] = decoded_rows[name].to_numpy(np.float64)
            row[f"true:{label}"] = truth_rows[name].to_numpy(np.float64)
        rows.append(row)
    return streams, pd.concat(rows, ignore_index=True)
