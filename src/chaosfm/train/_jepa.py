"""Reading a JEPA encoder: embeddings at the end of windows, and the held-out collapse check.

Dimension letters: N windows, L window length, F features, E embedding width.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from chaosfm.data import TimeFence
from chaosfm.models import JEPA
from chaosfm.train._encoder_inputs import EncoderInputs

__all__ = ["embed_windows", "heldout_spread"]


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


def heldout_spread(model: JEPA, frame: pd.DataFrame, fence: TimeFence, inputs: EncoderInputs) -> dict[str, Any]:
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
