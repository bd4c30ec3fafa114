"""What every code model is: codes in, next-code logits out, with a carried state for streaming.

A code model reads one stream of integer codes (a tokenized series) and returns, at each position,
logits for the next code. Called with ``state=None`` it sees only the codes given (training on
windows). Called with a state from :meth:`AbstractCodeModel.init_state` it continues from earlier
segments and returns the state after the last code: that is how truncated BPTT carries context
across segments, how held-out streams are scored with full context, and how :func:`generate`
samples one code at a time without recomputing the past.

Dimension letters: T time (codes), V vocabulary (codebook size).
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

__all__ = ["AbstractCodeModel", "count_params", "init_rng", "normal_init", "rms_norm"]


def init_rng(key: PRNGKeyArray | np.random.Generator) -> np.random.Generator:
    """The NumPy generator initial weights are drawn from, seeded by the key's data.

    Weights are drawn with NumPy rather than ``jax.random`` because eager ``jax.random`` compiles
    one program per array shape, seconds per model on a CPU; the same key still gives the same
    weights. A parent module passes its generator on to its children as their ``key``.
    """
    if isinstance(key, np.random.Generator):
        return key
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel())


def normal_init(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> Array:
    """float32 ``N(0, std^2)`` weights from ``rng``."""
    return jnp.asarray(std * rng.standard_normal(shape), jnp.float32)


def rms_norm(x: Float[Array, "... features"], eps: float = 1e-6) -> Float[Array, "... features"]:
    """RMSNorm without a learnable scale (Zhang & Sennrich 2019), computed in float32."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype)


class AbstractCodeModel(eqx.Module):
    """Next-code model over one stream of codes; batch with ``jax.vmap``.

    Concrete models have a frozen ``config`` dataclass with at least ``vocab_size``,
    ``context_length`` and ``dtype``; ``uses_exo`` says whether ``__call__`` needs ``exo``.
    """

    @abc.abstractmethod
    def __call__(
        self,
        codes: Int[Array, " time"],
        *,
        state: Any = None,
        exo: Float[Array, " time"] | None = None,
    ) -> tuple[Float[Array, "time vocab"], Any]:
        """Logits for the code after each position, and the state after the last (or ``None``)."""

    @abc.abstractmethod
    def init_state(self) -> Any:
        """The state before any code has been seen (a pytree of arrays of fixed shape)."""

    @property
    def uses_exo(self) -> bool:
        return False

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


def count_params(model: eqx.Module) -> int:
    """Number of trainable scalars in ``model``."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(leaf.size for leaf in leaves))
