"""``chaosfm mvx``: Multiverse Crossing scores over time from a pretrained JEPA with a flow head.

For every ``every``-th origin of each asset (the most recent ``max_origins``), the context
embedding is perturbed into universes and rolled out through the flow head
(:func:`chaosfm.agents.multiverse`), and the three scores of
:func:`chaosfm.agents.crossing_scores` are written to ``scores.csv``, plotted over time beside the
close in ``mvx.png`` (a dashed line where the encoder's data ends) and summarised in
``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, write_json
from chaosfm._config import ConfigError
from chaosfm._progress import progress
from chaosfm.agents import CrossingScores, crossing_scores, multiverse
from chaosfm.data import trained_through_to_json
from chaosfm.jobs._common import ReadOptions, finish_run, load_data, out_field
from chaosfm.report import to_png
from chaosfm.train import embed_windows, load_pretrained

__all__ = ["FLAGS", "MvxConfig", "run"]

FLAGS = {"run_dir": "run", "num_samples": "samples", "rollout_steps": "steps", "max_windows": "max_origins"}
"""CLI flag -> config key."""


class MvxConfig(ReadOptions):
    """``chaosfm mvx``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a `chaosfm pretrain` run with a flow head")
    data: str = Field(description="dataset name or path (market data)")
    out: Path = out_field("mvx", "folder to write")
    universes: int = Field(8, ge=2, description="perturbed copies M of each context embedding")
    samples: int = Field(16, ge=2, description="flow samples N per universe")
    steps: int = Field(3, ge=2, description="rollout steps K (each cfm_horizon candles)")
    scale: float = Field(0.05, gt=0, description="std of the tangent-plane perturbation")
    every: int = Field(5, ge=1, description="rows between scored origins")
    max_origins: int | None = Field(400, ge=1, description="at most this many (most recent) origins per asset")
    seed: int = 0


def run(config: MvxConfig) -> dict[str, Any]:
    """Multiverse Crossing scores over time: ``scores.csv``, ``mvx.png``, ``metrics.json``, ``meta.json``."""
    run_dir, data, out_dir = config.run, config.data, config.out
    universes, samples, steps, scale = config.universes, config.samples, config.steps, config.scale
    every, max_origins, seed = config.every, config.max_origins, config.seed
    model, inputs, meta = load_pretrained(run_dir)
    if model.flow is None:
        raise ConfigError(f"{run_dir}: this JEPA has no flow head (pretrained with cfm_weight 0); mvx needs one")
    frame = load_data(data, read=config)
    window = model.config.context_length
    rows = []
    root = jax.random.key(seed)  # one key per origin: fold_in(fold_in(key(seed), asset), row)
    for asset_index, (asset, stream) in enumerate(inputs.streams(frame).items()):
        ends = np.arange(window - 1, len(stream.inputs), every)
        if max_origins is not None:
            ends = ends[-max_origins:]
        if ends.size == 0:
            continue
        embeddings = embed_windows(model.encoder, stream.inputs, ends, window)
        for end, z in progress(list(zip(ends, embeddings)), f"mvx {asset}"):
            key = jax.random.fold_in(jax.random.fold_in(root, asset_index), int(end))
            starts, futures = multiverse(model, jnp.asarray(z), key=key, universes=universes,
                                         samples=samples, steps=steps, scale=scale)
            scores = crossing_scores(np.asarray(starts), np.asarray(futures))
            rows.append({"asset": asset, "timestamp": stream.stamps.iloc[end], **scores._asdict()})
    table = pd.DataFrame(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scores.csv", index=False)
    atomic_write_bytes(out / "mvx.png", _plot(frame, table, meta["trained_through"] or {}))
    summary = {
        "run": str(run_dir),
        "data": data,
        "origins": int(len(table)),
        "settings": {"universes": universes, "samples": samples, "steps": steps, "scale": scale, "every": every},
        "input": inputs.kind,
        "encoder_trained_through": trained_through_to_json(meta["trained_through"]),
        "scores": {
            name: {"mean": float(table[name].mean()), "min": float(table[name].min()), "max": float(table[name].max())}
            for name in CrossingScores._fields
        },
    }
    write_json(out / "metrics.json", summary)
    finish_run(out, seed=seed, trained_through=None, kind="mvx")
    return summary


def _plot(frame: pd.DataFrame, table: pd.DataFrame, seen: dict[str, Any]) -> bytes:
    """Close and the three scores over the scored span; a dashed line where the encoder's data ends."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(10, 8), sharex=True)
    start = pd.to_datetime(table["timestamp"]).min()
    for asset, part in frame.groupby("asset", sort=False):
        part = part[part["timestamp"] >= start]
        axes[0].plot(part["timestamp"], part["close"], linewidth=0.7, label=str(asset))
        if str(asset) in seen and seen[str(asset)] >= start:
            for axis in axes:
                axis.axvline(seen[str(asset)], color="black", linestyle="--", linewidth=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("close")
    axes[0].legend(fontsize=7)
    for axis, name in zip(axes[1:], CrossingScores._fields):
        for asset, part in table.groupby("asset", sort=False):
            axis.plot(pd.to_datetime(part["timestamp"]), part[name], linewidth=0.8, label=str(asset))
        axis.set_ylabel(name)
    axes[0].set_title("Multiverse Crossing scores over time")
    return to_png(figure)
