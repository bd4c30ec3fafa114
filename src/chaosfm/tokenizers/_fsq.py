"""FSQ: Finite Scalar Quantization (Mentzer, Minnen, Agustsson, Tschannen 2023) over candles.

Dimension letters: N latents, D = len(levels) latent dimensions.

Each latent dimension ``i`` is bounded to ``L_i`` values and rounded (Sec. 3.1 and App. A.1):

    bound(z)_i = tanh(z_i + shift_i) * h_i - offset_i,   h_i = (L_i - 1)(1 - eps) / 2,
    offset_i = 0.5 if L_i is even else 0,                shift_i = tan(offset_i / h_i)

so ``round(bound(z))_i`` takes exactly ``L_i`` integer values, and the straight-through estimator
``z + stop_gradient(round(z) - z)`` carries the gradient past the rounding. The code of a latent is
its mixed-radix number ``sum_i (q_i + L_i // 2) * prod_{j<i} L_j``, so the codebook is the whole
grid (``prod L_i`` codes) and there is nothing to learn, collapse or restart.

Plain FSQ still leaves part of the grid unreached on candles: their features are dependent
(``range`` is the wicks plus the body, the body follows the return), so a reconstruction-only
encoder lays them on a thin manifold of the 4-D grid (0.69 train usage of 1024 codes on four
indices). ``FSQConfig.entropy_weight`` adds an entropy penalty on a soft code assignment
(:meth:`FSQuantizer.entropy_loss`) that spreads the batch over the whole grid (1.00 train usage).

``shift`` is the paper's ``tan``: ``atanh`` would centre ``bound(0)`` a little better but is
undefined for ``L = 2`` (``offset / h > 1``); both give the same grid.
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
from chaosfm.tokenizers._base import check_positive
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
    """The FSQ grid: latents ``(N, D)`` to codes ``(N,)`` in ``[0, prod(levels))`` and back.

    With ``entropy_weight > 0`` the training loss gains :meth:`entropy_loss`.
    """

    levels: tuple[int, ...] = eqx.field(static=True)
    entropy_weight: float = eqx.field(static=True)
    entropy_temperature: float = eqx.field(static=True)
    restart_picks = 0  # nothing to restart

    def __init__(self, levels: tuple[int, ...], entropy_weight: float = 0.0, entropy_temperature: float = 1.0):
        self.levels = check_levels(levels)
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)

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
        shift = jnp.tan(offset / half)
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
        aux = self.entropy_weight * self.entropy_loss(z) if self.entropy_weight > 0 else jnp.zeros(())
        return z_q, self.codes_from_grid(z_q), aux

    def entropy_loss(self, z: Float[Array, "N D"]) -> Float[Array, ""]:
        """``mean_n H(p_n) - H(mean_n p_n)`` in nats, with ``p_n`` a soft code assignment.

        The entropy penalty of Yu et al. 2023 ("Language Model Beats Diffusion", Sec. 3.1) on the
        FSQ grid: ``p_n(code) = prod_i softmax_l(-(bound(z_n)_i - l)^2 / T)`` over the integer
        levels ``l`` of dimension ``i``. The first term makes each latent sit near one code, the
        second spreads the batch over the whole codebook (the joint, not only each dimension:
        candle features are dependent, so uniform marginals alone still leave most codes unused).
        Above 2^14 codes the codebook term uses the per-dimension marginals instead.
        """
        bounded = self.bound(z)
        per_dim = []
        for i, level in enumerate(self.levels):
            grid = jnp.arange(level, dtype=jnp.float32) - level // 2  # the values round() gives
            distance = (bounded[:, i : i + 1] - grid[None, :]) ** 2  # (N, L_i)
            per_dim.append(jax.nn.softmax(-distance / self.entropy_temperature, axis=-1))
        sample_entropy = sum(_entropy(p).mean() for p in per_dim)  # H of a product = sum of H
        if self.vocab_size <= 2**14:
            joint = per_dim[0]
            for p in per_dim[1:]:
                joint = (joint[:, :, None] * p[:, None, :]).reshape(joint.shape[0], -1)  # (N, prod)
            codebook_entropy = _entropy(joint.mean(axis=0))
        else:
            codebook_entropy = sum(_entropy(p.mean(axis=0)) for p in per_dim)
        return sample_entropy - codebook_entropy

    def encode(self, z: Float[Array, "N D"]) -> Int[Array, " N"]:
        return self.codes_from_grid(self.grid(z))

    def decode(self, codes: Int[Array, " N"]) -> Float[Array, "N D"]:
        levels, half_width, basis = self._arrays()
        digits = (codes[:, None] // basis) % levels.astype(jnp.int32)  # (N, D)
        return (digits.astype(jnp.float32) - half_width) / half_width

    def update(self, z: Any, codes: Any, *, picks: Any, step: Any) -> FSQuantizer:
        return self  # the grid is fixed


def _entropy(p: Float[Array, "... K"]) -> Float[Array, "..."]:
    return -jnp.sum(p * jnp.log(p + 1e-9), axis=-1)


@dataclasses.dataclass(frozen=True)
class FSQConfig(CandleConfig):
    """FSQ tokenizer settings (network and training fields: see ``CandleConfig``)."""

    levels: tuple[int, ...] = (8, 8, 4, 4)  # 1024 codes; Mentzer et al. Table 1 suggest this for 2^10
    # Weight of FSQuantizer.entropy_loss; 0 is plain FSQ. Without it the encoder packs dependent
    # candle features onto a thin manifold of the grid: ~0.69 train usage of 1024 codes on four
    # indices, against ~0.96 with 0.05 (and held-out RMSE ratios 0.36 -> 0.35 at worst).
    entropy_weight: float = 0.05
    # Softmax temperature of the soft code assignment, in squared level units. At 1 a latent's
    # soft assignment spreads over neighbouring cells, so a thin manifold already looks spread
    # out and usage does not move; 0.1 is close to the hard assignment.
    entropy_temperature: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", check_levels(self.levels))
        if not (isinstance(self.entropy_weight, (int, float)) and self.entropy_weight >= 0):
            raise ConfigError(f"entropy_weight must be a number >= 0, got {self.entropy_weight!r}")
        check_positive(self.entropy_temperature, "entropy_temperature")
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

    @staticmethod
    def make_quantizer(config: FSQConfig, key: PRNGKeyArray) -> FSQuantizer:
        return FSQuantizer(config.levels, config.entropy_weight, config.entropy_temperature)
