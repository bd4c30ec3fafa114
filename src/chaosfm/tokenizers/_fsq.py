"""FSQ: Finite Scalar Quantization (Mentzer, Minnen, Agustsson, Tschannen 2023) over candles.

Dimension letters: N latents, D = len(levels) latent dimensions.

Each latent dimension ``i`` is bounded to ``L_i`` values and rounded (Sec. 3.1 and App. A.1):

    bound(z)_i = tanh(z_i + shift_i) * h_i - offset_i,   h_i = (L_i - 1)(1 - eps) / 2,
    offset_i = 0.5 if L_i is even else 0,                shift_i = atanh(offset_i / h_i)

so ``round(bound(z))_i`` takes exactly ``L_i`` integer values, and the straight-through estimator
``z + stop_gradient(round(z) - z)`` carries the gradient past the rounding. The code of a latent is
its mixed-radix number ``sum_i (q_i + L_i // 2) * prod_{j<i} L_j``, so the codebook is the whole
grid (``prod L_i`` codes) and there is nothing to learn, collapse or restart.

(The paper's code uses ``tan`` for ``shift``; ``atanh`` is the value that makes ``bound(0) = 0``
for even ``L``. Both give the same grid.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm._config import ConfigError
from chaosfm.tokenizers._candle import AbstractCandleTokenizer, CandleConfig

_EPS = 1e-3


def check_levels(levels: Any) -> tuple[int, ...]:
    """``levels`` as a tuple of ints >= 2, or a ConfigError saying which entry is wrong."""
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__") or len(levels) == 0:
        raise ConfigError(f"levels must be a non-empty list of integers >= 2, e.g. [8, 8, 4, 4]; got {levels!r}")
    out = []
    for position, level in enumerate(levels):
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)):
            raise ConfigError(f"levels[{position}] must be an integer >= 2, got {level!r}")
        if level < 2:
            raise ConfigError(
                f"levels[{position}] is {level}: every FSQ level must be >= 2 "
                "(a dimension with one level carries no information)"
            )
        out.append(int(level))
    if int(np.prod(out, dtype=np.float64)) > 2**31 - 1:
        raise ConfigError(f"levels {out} give more than 2**31 - 1 codes; int32 codes cannot hold them")
    return tuple(out)


class FSQuantizer(eqx.Module):
    """The FSQ grid: latents ``(N, D)`` to codes ``(N,)`` in ``[0, prod(levels))`` and back."""

    levels: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, levels: tuple[int, ...]):
        self.levels = check_levels(levels)

    @property
    def vocab_size(self) -> int:
        return int(np.prod(self.levels))

    def _arrays(self):
        levels = jnp.asarray(self.levels, jnp.float32)[None, :]  # (1, D)
        half_width = jnp.asarray([level // 2 for level in self.levels], jnp.float32)[None, :]
        basis = jnp.asarray(np.cumprod((1,) + self.levels[:-1]), jnp.int32)[None, :]
        return levels, half_width, basis

    def bound(self, z: Float[Array, "N D"]) -> Float[Array, "N D"]:
        """Squash each dimension into ``(-L/2, L/2)`` (shifted by 1/2 for even ``L``)."""
        levels, _, _ = self._arrays()
        half = (levels - 1) * (1 - _EPS) / 2
        offset = jnp.where(levels % 2 == 0, 0.5, 0.0)
        shift = jnp.arctanh(offset / half)
        return jnp.tanh(z + shift) * half - offset

    def grid(self, z: Float[Array, "N D"]) -> Float[Array, "N D"]:
        """The rounded, bounded latents, scaled to ``[-1, 1]``, with straight-through gradients."""
        _, half_width, _ = self._arrays()
        bounded = self.bound(z)
        rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
        return rounded / half_width

    def codes_from_grid(self, z_q: Float[Array, "N D"]) -> Int[Array, " N"]:
        _, half_width, basis = self._arrays()
        digits = jnp.round(z_q * half_width + half_width).astype(jnp.int32)  # (N, D) in [0, L)
        return jnp.sum(digits * basis, axis=-1).astype(jnp.int32)

    def quantize(self, z: Float[Array, "N D"]):
        z_q = self.grid(z)
        return z_q, self.codes_from_grid(z_q), jnp.zeros(())

    def encode(self, z: Float[Array, "N D"]) -> Int[Array, " N"]:
        return self.codes_from_grid(self.grid(z))

    def decode(self, codes: Int[Array, " N"]) -> Float[Array, "N D"]:
        levels, half_width, basis = self._arrays()
        digits = (codes[:, None] // basis) % levels.astype(jnp.int32)  # (N, D)
        return (digits.astype(jnp.float32) - half_width) / half_width

    def update(self, z: Any, codes: Any, *, key: Any, step: Any) -> FSQuantizer:
        return self  # the grid is fixed


@dataclasses.dataclass(frozen=True)
class FSQConfig(CandleConfig):
    """FSQ tokenizer settings (network and training fields: see ``CandleConfig``)."""

    levels: tuple[int, ...] = (8, 8, 4, 4)  # 1024 codes; Mentzer et al. Table 1 suggest this for 2^10

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", check_levels(self.levels))
        super().__post_init__()


@final
class FSQTokenizer(AbstractCandleTokenizer):
    """Candles to FSQ codes with a dilated causal CNN encoder and decoder.

    One code per candle (or per ``patch`` candles); the code at ``t`` depends only on candles at
    or before ``t``. ``vocab_size = prod(levels)``, 1024 by default.

    Example:
        >>> tokenizer = FSQTokenizer(levels=(8, 8, 4, 4)).fit(train, key=jax.random.key(0), steps=2000)
        >>> codes = tokenizer.encode(frame)            # int32, one per candle
        >>> features = tokenizer.decode(codes[:500])   # (500, 5) symlog_return, body, wicks, range
    """

    name = "fsq"
    config_class = FSQConfig

    @property
    def vocab_size(self) -> int:
        return int(np.prod(self.config.levels))

    @property
    def latent_dim(self) -> int:
        return len(self.config.levels)

    def new_quantizer(self, key: PRNGKeyArray) -> FSQuantizer:
        return FSQuantizer(self.config.levels)
