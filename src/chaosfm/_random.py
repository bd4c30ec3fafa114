"""Randomness from one seed: the keys a run derives, and NumPy generators from JAX keys.

A run records one seed (``meta.json``). Every random draw of the run comes from it through the
functions here, so the same config and seed give the same bits (DESIGN: randomness is explicit).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class RunKeys(NamedTuple):
    """The keys a training run derives from its seed.

    Attributes:
        tokenizer: the tokenizer's fit (initialisation and window draws).
        init: the model's initial weights.
        loop: the training loop's per-step keys (dropout, sampling); batches are drawn from
            ``(seed, step)`` by the window sampler, so a resumed run sees the same batches.
    """

    tokenizer: Any
    init: Any
    loop: Any


def run_keys(seed: int) -> RunKeys:
    """The keys of a run with ``seed`` (the derivation every chaosfm run has always used)."""
    import jax

    root = jax.random.key(seed)
    return RunKeys(tokenizer=root, init=jax.random.fold_in(root, 1), loop=root)


def numpy_rng(key: Any) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key (typed or raw), for host-side draws
    (baselines built on NumPy, SciPy or arch; window draws of a tokenizer's fit)."""
    import jax

    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())
