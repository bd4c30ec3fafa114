"""``chaosfm tokenize`` and ``chaosfm tokenize inspect``.

:func:`run` loads data, splits it at a cutoff with a :class:`~chaosfm.data.TimeFence`, fits a
tokenizer on the rows before it, measures its health on both sides and writes a run folder:

- ``config.yaml``: the resolved :class:`TokenizeConfig`;
- ``tokenizer.json``, ``model.eqx``: the fitted tokenizer (``load_tokenizer(run_dir)`` reads it);
- ``metrics.json``: the health numbers (see ``_health.py``), data, cutoff and timings;
- ``code_counts.json``: how often each code occurs on training and held-out rows;
- ``example.json``: a held-out window of the tokenised values beside their reconstruction;
- ``log.jsonl``: the training loss every few steps;
- ``meta.json``: versions, seed, ``trained_through`` and the sha256 of every file.

:func:`inspect` checks those hashes, reloads the tokenizer, and writes ``inspect.png`` (code
usage, and the example window reconstructed beside the original).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text, nan_to_none, verify_run, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm._progress import say
from chaosfm._random import run_keys
from chaosfm.data import TimeFence, trained_through_to_json
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION, Cutoff, DatasetNames, ReadOptions, finish_run, load_data, resolve_fence, write_config
from chaosfm.tokenizers import (
    AbstractTokenizer,
    encodable,
    health_table,
    load_tokenizer,
    make_tokenizer,
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
    cutoff: Cutoff = Field(None, description="last timestamp fitting may see (one, or NAME=DATE per asset)")
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    seed: int = 0
    speed_repeats: int = Field(5, ge=1, description="timed encoding runs for encode_candles_per_second")
    out: Path = Path("runs/tokenize")



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
    tokenizer.fit(train, key=run_keys(config.seed).tokenizer, steps=config.steps, fence=fence)
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
