"""A pretrained JEPA's view of each asset, as causal per-asset features on an agent's panel.

:func:`encoder_features` reads a ``chaosfm pretrain`` run (the ``(model, inputs)`` of
:func:`chaosfm.train.load_pretrained`) over a market frame and lays two features out on the rows
and assets of :func:`market_panel` (its ``stamps`` and ``names``), ready for its ``extra``:

* **embeddings** ``(T, A, E)``: at row ``t``, the encoder's embedding of the context window of
  the asset's ``context_length`` rows ending at ``t`` (inclusive): the last step of
  :func:`chaosfm.train.embed_windows`. The window reads the rows at or before ``t`` and nothing
  after (the encoder is causal, its features are, and the scaler was fitted at pretraining).
* **convergence** ``(T, A)``: the Multiverse Crossing convergence (:func:`crossing_scores`) of the
  context ending at every ``every``-th row of each asset, counted as ``chaosfm mvx`` counts them
  (the asset's first full context, then every ``every`` rows of its own), with mvx's perturbation
  parameters; each value is carried forward over the asset's later rows until the next computed
  one, so the value at ``t`` is the one computed at the latest computed row at or before ``t``.
  Convergence reads the first rollout step only, so mvx's ``steps`` does not change it and is not
  drawn. The same clouds give the **bifurcation index** and a one-step **Lyapunov proxy** (the
  log-spread slope from the perturbation to the first rollout step), carried forward alike.

Both are NaN where the asset has no row at ``t``, and before its first full context (the
features' warm-up plus ``context_length - 1`` rows). Leakage is the caller's to keep:
the run's ``trained_through`` must be at or before the agent's fence (``market_panel``'s
``fit_end``) for the features of later rows to be fresh.

Dimension letters: T rows of the panel, A assets of the panel, E embedding width, M universes,
N flow samples per universe, C origins in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm._progress import progress
from chaosfm.agents._multiverse import crossing_scores, multiverse
from chaosfm.train import EncoderInputs, embed_windows

__all__ = ["EncoderFeatures", "encoder_features"]


class EncoderFeatures(NamedTuple):
    """What :func:`encoder_features` returns, on the panel's rows and assets.

    Attributes:
        embeddings: ``(T, A, E)`` float32, the embedding of the context ending at each row.
        convergence: ``(T, A)`` float32 Multiverse Crossing convergence in [0, 1], carried forward
            from the latest computed row; None when not asked for (``convergence=False``).
        bifurcation: ``(T, A)`` the bifurcation index of the same clouds, or None.
        lyapunov: ``(T, A)`` the Lyapunov proxy of the same clouds over their one rollout step, or None.
    """

    embeddings: Float[np.ndarray, "T A E"]
    convergence: Float[np.ndarray, "T A"] | None
    bifurcation: Float[np.ndarray, "T A"] | None = None
    lyapunov: Float[np.ndarray, "T A"] | None = None


@eqx.filter_jit
def _first_clouds(
    model: Any, z: Float[Array, "C E"], keys: PRNGKeyArray, universes: int, samples: int, scale: float
) -> tuple[Float[Array, "C M E"], Float[Array, "C 1 M N E"]]:
    """:func:`multiverse` of a batch of embeddings, one key each, through the first rollout step."""
    return jax.vmap(
        lambda e, k: multiverse(model, e, key=k, universes=universes, samples=samples, steps=1, scale=scale)
    )(z, keys)


@jax.jit
def _origin_keys(key: PRNGKeyArray, assets: Array, rows: Array) -> PRNGKeyArray:
    """``fold_in(fold_in(key, asset), row)`` per origin: the keys of ``chaosfm mvx``."""
    return jax.vmap(lambda a, r: jax.random.fold_in(jax.random.fold_in(key, a), r))(assets, rows)


def encoder_features(
    model: Any,
    inputs: EncoderInputs,
    frame: pd.DataFrame,
    stamps: np.ndarray,
    names: Sequence[str],
    *,
    key: PRNGKeyArray | None = None,
    every: int = 5,
    universes: int = 8,
    samples: int = 16,
    scale: float = 0.05,
    convergence: bool = True,
    chunk: int = 512,
) -> EncoderFeatures:
    """Causal per-asset encoder embeddings and Multiverse Crossing convergence on a panel's rows.

    See the module docstring for what each row holds.

    Args:
        model: a pretrained JEPA (:func:`chaosfm.train.load_pretrained`); a flow head
            (``cfm_weight > 0``) when ``convergence`` is asked for.
        inputs: what its encoder reads (from the same ``load_pretrained``).
        frame: the market frame the panel was built from (of the kind the encoder was pretrained
            on: candles or close-only).
        stamps: ``(T,)`` the panel's timestamps, as :func:`market_panel` returns them (unique).
        names: the panel's ``A`` asset names, as :func:`market_panel` returns them; an asset
            missing from ``frame`` gets NaN throughout.
        key: the draws of the perturbations and the flow; the origin at row ``r`` of the asset's
            stream (its rows past the feature warm-up) in column ``a`` of ``names`` draws with
            ``fold_in(fold_in(key, a), r)``, the key ``chaosfm mvx`` gives it with
            ``key(seed)`` when ``names`` lists the assets in the frame's order. Needed only for
            convergence.
        every: rows of an asset between computed convergences (``chaosfm mvx --every``).
        universes: perturbed copies ``M`` of each context embedding (mvx's default).
        samples: flow samples ``N`` per universe (mvx's default).
        scale: std of the tangent-plane perturbation (mvx's default).
        convergence: compute convergence; False returns None for it (and needs no flow head, no key).
        chunk: windows (embeddings) or origins (convergence) per compiled batch.

    Returns:
        :class:`EncoderFeatures`: ``embeddings`` ``(T, A, E)`` and ``convergence`` ``(T, A)`` (or None).

    Raises:
        ValueError: convergence is asked for of a model without a flow head or without a key,
            ``stamps`` repeat, or a setting is out of range.
        DataError: the frame is not of the kind the encoder reads (naming both feature sets).
    """
    if convergence and model.flow is None:
        raise ValueError("encoder_features: convergence needs a JEPA with a flow head (pretrained with "
                         "cfm_weight > 0); this one has none: pass convergence=False for the embeddings alone")
    if convergence and key is None:
        raise ValueError("encoder_features: convergence draws perturbations and flow samples; pass key=")
    problems = [f"{name} must be >= {low}, got {value}" for name, value, low in
                (("every", every, 1), ("universes", universes, 2), ("samples", samples, 2), ("chunk", chunk, 1))
                if value < low]
    if not scale > 0:
        problems.append(f"scale must be > 0, got {scale}")
    if problems:
        raise ValueError("encoder_features: " + "; ".join(problems))
    panel_rows = pd.Index(stamps)
    if not panel_rows.is_unique:
        raise ValueError("encoder_features: stamps must be unique (the panel's rows, as market_panel returns them)")
    names = [str(name) for name in names]
    if "asset" not in frame.columns:  # one asset may omit the column; market_panel names it "asset"
        frame = frame.assign(asset="asset")
    window = model.config.context_length
    width = model.config.d_embed
    streams = inputs.streams(frame)
    embeddings = np.full((len(panel_rows), len(names), width), np.nan, np.float32)
    origins: list[tuple[int, np.ndarray, np.ndarray]] = []  # (column, stream rows, panel rows) per asset
    for column, name in enumerate(progress(names, "encoder embeddings")):
        stream = streams.get(name)
        if stream is None or len(stream.inputs) < window:
            continue
        ends = np.arange(window - 1, len(stream.inputs))
        rows = panel_rows.get_indexer(pd.Index(stream.stamps[ends]))
        on_panel = rows >= 0
        ends, rows = ends[on_panel], rows[on_panel]
        if ends.size == 0:
            continue
        embeddings[rows, column] = embed_windows(model.encoder, stream.inputs, ends, window, chunk=chunk)
        computed = (ends - (window - 1)) % every == 0  # mvx's origins: window - 1, then every `every` rows
        origins.append((column, ends[computed], rows[computed]))
    if not convergence:
        return EncoderFeatures(embeddings, None)
    return EncoderFeatures(
        embeddings, *_convergence(model, embeddings, origins, frame, panel_rows, names, key, universes, samples,
                                  scale, chunk)
    )


def _convergence(
    model: Any,
    embeddings: np.ndarray,
    origins: list[tuple[int, np.ndarray, np.ndarray]],
    frame: pd.DataFrame,
    panel_rows: pd.Index,
    names: list[str],
    key: PRNGKeyArray,
    universes: int,
    samples: int,
    scale: float,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(T, A)`` convergence, bifurcation index and Lyapunov proxy at the origins, each carried
    forward over each asset's rows."""
    columns = np.concatenate([np.full(len(ends), column) for column, ends, _ in origins]) if origins else np.zeros(0)
    stream_rows = np.concatenate([ends for _, ends, _ in origins]) if origins else np.zeros(0)
    rows = np.concatenate([r for _, _, r in origins]) if origins else np.zeros(0)
    columns, stream_rows, rows = (np.asarray(a, np.int64) for a in (columns, stream_rows, rows))
    computed = np.full((3, len(columns)), np.nan)  # convergence, bifurcation, lyapunov
    for start in progress(range(0, len(columns), chunk), "encoder convergence", total=-(-len(columns) // chunk)):
        part = slice(start, min(start + chunk, len(columns)))
        size = part.stop - part.start
        pad = np.r_[np.arange(part.start, part.stop), np.full(chunk - size, part.stop - 1)]  # one compile
        z = jnp.asarray(embeddings[rows[pad], columns[pad]])
        keys = _origin_keys(key, jnp.asarray(columns[pad], jnp.uint32), jnp.asarray(stream_rows[pad], jnp.uint32))
        starts, futures = (np.asarray(a) for a in _first_clouds(model, z, keys, universes, samples, scale))
        computed[:, part] = np.transpose([tuple(crossing_scores(starts[i], futures[i])) for i in range(size)])
    has_row = np.zeros((len(panel_rows), len(names)), bool)
    for column, name in enumerate(names):
        present = panel_rows.get_indexer(pd.Index(frame.loc[frame["asset"].astype(str) == name, "timestamp"]))
        has_row[present[present >= 0], column] = True

    def laid_out(values):
        out = np.full(has_row.shape, np.nan)
        out[rows, columns] = values
        # Carry forward within each asset: the latest computed value at or before each row (never a later one).
        out = pd.DataFrame(out).ffill().to_numpy()
        return np.where(has_row, out, np.nan).astype(np.float32)

    return tuple(laid_out(values) for values in computed)
