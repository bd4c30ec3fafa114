"""Multiverse Crossing: how much do plausible futures depend on a nudge to the present?

From one context embedding ``z`` (on the unit sphere), ``M`` universes are made by perturbing it
in the tangent plane of the sphere and renormalising (:func:`tangent_perturb`). The JEPA's flow
head draws ``N`` futures for each, and each future is rolled on by feeding it back as the next
condition, ``K`` times (``cfm_horizon`` steps each). Three scores summarise the cloud:

* **convergence** in [0, 1]: ``W / (W + B)`` with ``W`` the mean within-universe variance and ``B``
  the variance of the universe means (a one-way ANOVA split of the total spread). 1: the nudges do
  not matter, the futures agree across universes; 0: each universe has its own future.
* **bifurcation index**: ``exp(H)`` of the normalised eigenvalues ``p`` of the samples' Gram
  matrix (``H = -sum p log p``): the effective number of directions (regimes) the futures split
  into; 1 for a single regime.
* **Lyapunov proxy**: the least-squares slope of ``log`` RMS spread against the rollout step (per
  ``cfm_horizon`` candles), from the initial perturbation through the ``K`` rollout steps; > 0 when
  nudges grow.

:func:`confidence_filter` (also exported as ``filter``) keeps the origins whose convergence is at
least a threshold. :func:`run_mvx` computes the scores over time for a dataset and a pretrain run.

Dimension letters: K rollout steps, M universes, N samples per universe, E embedding width.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, write_json, write_meta
from chaosfm._config import ConfigError
from chaosfm._progress import progress
from chaosfm.data import load, trained_through_to_json
from chaosfm.models import l2_normalize
from chaosfm.train import embed_windows, load_pretrained

__all__ = [
    "CrossingScores",
    "MvxConfig",
    "confidence_filter",
    "crossing_scores",
    "multiverse",
    "run_mvx",
    "tangent_perturb",
]


@eqx.filter_jit
def tangent_perturb(
    z: Float[Array, " dim"], universes: int, scale: float, *, key: PRNGKeyArray
) -> Float[Array, "universes dim"]:
    """``universes`` points near ``z`` on the unit sphere: Gaussian noise of std ``scale`` with its
    component along ``z`` removed (the tangent plane), added to ``z``, then renormalised."""
    z = l2_normalize(z)
    noise = scale * jax.random.normal(key, (universes, z.shape[-1]), jnp.float32)
    tangent = noise - (noise @ z)[:, None] * z[None, :]
    return l2_normalize(z[None, :] + tangent)


def multiverse(
    model: Any,
    z: Float[Array, " dim"],
    *,
    key: PRNGKeyArray,
    universes: int = 8,
    samples: int = 16,
    steps: int = 3,
    scale: float = 0.05,
) -> tuple[Float[Array, "universes dim"], Float[Array, "steps universes samples dim"]]:
    """The perturbed contexts ``(M, E)`` and the rolled-out futures ``(K, M, N, E)`` of a JEPA with a flow head."""
    if model.flow is None:
        raise ValueError("Multiverse Crossing needs a JEPA with a flow head (cfm_weight > 0)")
    return _multiverse(model, z, key, universes, samples, steps, scale)


@eqx.filter_jit
def _multiverse(model, z, key, universes: int, samples: int, steps: int, scale: float):
    perturb_key, first_key, roll_key = jax.random.split(key, 3)
    starts = tangent_perturb(z, universes, scale, key=perturb_key)
    keys = jax.random.split(first_key, universes)
    first = jax.vmap(lambda c, k: model.sample_future(c, samples, key=k))(starts, keys)  # (M, N, E)

    def step(current, step_key):
        flat = current.reshape(universes * samples, -1)
        drawn = jax.vmap(lambda c, k: model.sample_future(c, 1, key=k)[0])(
            flat, jax.random.split(step_key, flat.shape[0])
        )
        nxt = drawn.reshape(current.shape)
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(roll_key, steps - 1))
    return starts, jnp.concatenate([first[None], rest])


class CrossingScores(NamedTuple):
    """The three Multiverse Crossing scores of one origin (or arrays of them over origins)."""

    convergence: Any
    bifurcation: Any
    lyapunov: Any


def crossing_scores(
    starts: np.ndarray, futures: np.ndarray
) -> CrossingScores:
    """Scores from perturbed contexts ``(M, E)`` and futures ``(K, M, N, E)`` (see the module docstring).

    Convergence and bifurcation use the first rollout step; the Lyapunov proxy uses them all.
    """
    starts, futures = np.asarray(starts, np.float64), np.asarray(futures, np.float64)
    first = futures[0]  # (M, N, E)
    means = first.mean(axis=1)  # (M, E)
    within = float(np.mean(np.sum((first - means[:, None]) ** 2, axis=-1)))
    between = float(np.mean(np.sum((means - means.mean(axis=0)) ** 2, axis=-1)))
    convergence = 1.0 if within + between <= 1e-12 else within / (within + between)
    cloud = first.reshape(-1, first.shape[-1])
    # The Gram matrix X X^T / n has the nonzero eigenvalues of X^T X / n, which is E x E.
    eigen = np.clip(np.linalg.eigvalsh(cloud.T @ cloud / cloud.shape[0]), 0.0, None)
    p = eigen / eigen.sum()
    entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
    spread = [np.sqrt(np.mean(np.sum((starts - starts.mean(axis=0)) ** 2, axis=-1)))]
    for cloud_k in futures:
        flat = cloud_k.reshape(-1, cloud_k.shape[-1])
        spread.append(np.sqrt(np.mean(np.sum((flat - flat.mean(axis=0)) ** 2, axis=-1))))
    logs = np.log(np.maximum(spread, 1e-12))
    steps = np.arange(len(logs), dtype=np.float64)
    slope = float(np.polyfit(steps, logs, 1)[0])
    return CrossingScores(convergence, math.exp(entropy), slope)


def confidence_filter(scores: CrossingScores | Any, threshold: float) -> np.ndarray:
    """Boolean mask of origins to act on: convergence at or above ``threshold`` (in [0, 1]).

    Args:
        scores: :class:`CrossingScores` (of arrays), a frame with a ``convergence`` column, or
            convergence values.
        threshold: minimum convergence.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if isinstance(scores, CrossingScores):
        values = scores.convergence
    elif isinstance(scores, pd.DataFrame):
        values = scores["convergence"]
    else:
        values = scores
    return np.asarray(values, np.float64) >= threshold


filter = confidence_filter  # noqa: A001 - the name the issue and the docs use


class MvxConfig(BaseModel):
    """``chaosfm mvx``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a `chaosfm pretrain` run with a flow head")
    data: str = Field(description="dataset name or path (market data)")
    out: Path = Field(description="folder to write")
    universes: int = Field(8, ge=2, description="perturbed copies M of each context embedding")
    samples: int = Field(16, ge=2, description="flow samples N per universe")
    steps: int = Field(3, ge=2, description="rollout steps K (each cfm_horizon candles)")
    scale: float = Field(0.05, gt=0, description="std of the tangent-plane perturbation")
    every: int = Field(5, ge=1, description="rows between scored origins")
    max_origins: int | None = Field(400, ge=1, description="at most this many (most recent) origins per asset")
    seed: int = 0


def run_mvx(config: MvxConfig) -> dict[str, Any]:
    """Multiverse Crossing scores over time: ``scores.csv``, ``mvx.png``, ``metrics.json``, ``meta.json``."""
    run_dir, data, out_dir = config.run, config.data, config.out
    universes, samples, steps, scale = config.universes, config.samples, config.steps, config.scale
    every, max_origins, seed = config.every, config.max_origins, config.seed
    model, inputs, meta = load_pretrained(run_dir)
    if model.flow is None:
        raise ConfigError(f"{run_dir}: this JEPA has no flow head (pretrained with cfm_weight 0); mvx needs one")
    frame = load(data)
    window = model.config.context_length
    rows = []
    root = jax.random.key(seed)
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
    write_meta(out, seed=seed, trained_through=None, extra={"kind": "mvx"})
    return summary


def _plot(frame: pd.DataFrame, table: pd.DataFrame, seen: dict[str, Any]) -> bytes:
    """Close and the three scores over the scored span; a dashed line where the encoder's data ends."""
    import matplotlib

    matplotlib.use("Agg")
    import io

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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
