"""VQ-VAE over candles with an EMA codebook, commitment loss and dead-code restarts.

Dimension letters: N latents, K codebook entries, D latent dimensions.

The quantizer maps each encoder output ``z`` to its nearest codebook entry ``e_k`` (van den Oord
et al. 2017, "Neural Discrete Representation Learning", Sec. 3.1). The encoder is trained through
the straight-through estimator ``z + stop_gradient(e_k - z)`` and pulled towards its entry by the
commitment loss ``beta ||z - stop_gradient(e_k)||^2`` (Sec. 3.2, ``beta = 0.25``). The codebook
is not trained by gradients but as exponential moving averages of the latents assigned to each
entry (App. A.1 of the paper; Razavi et al. 2019):

    N_k <- g N_k + (1 - g) n_k,    m_k <- g m_k + (1 - g) sum_{z -> k} z,    e_k = m_k / N~_k

with Laplace-smoothed counts ``N~``. An entry whose EMA count falls below ``restart_threshold``
assignments per step is dead: every ``restart_every`` steps dead entries are moved onto encoder
outputs drawn at random from the current batch (Dhariwal et al. 2020, "Jukebox", Sec. 3.2), so
the codebook follows the data instead of collapsing onto a few entries.
"""

from __future__ import annotations

import dataclasses
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm._config import ConfigError, require_int
from chaosfm._random import numpy_rng
from chaosfm.tokenizers._base import check_positive
from chaosfm.tokenizers._candle import AbstractCandleTokenizer, CandleConfig

_LAPLACE = 1e-5


class EMACodebook(eqx.Module):
    """A VQ codebook trained by moving averages, with dead-code restarts.

    Attributes:
        codebook: ``(K, D)`` entries.
        cluster_size: ``(K,)`` EMA of assignments per step.
        embed_sum: ``(K, D)`` EMA of the sum of latents assigned to each entry.
        restarted: total entries restarted so far.
    """

    codebook: Float[Array, "K D"]
    cluster_size: Float[Array, " K"]
    embed_sum: Float[Array, "K D"]
    restarted: Int[Array, ""]
    decay: float = eqx.field(static=True)
    commitment: float = eqx.field(static=True)
    restarts: bool = eqx.field(static=True)
    restart_every: int = eqx.field(static=True)
    restart_threshold: float = eqx.field(static=True)

    def __init__(
        self, size: int, dim: int, *, decay: float, commitment: float, restarts: bool,
        restart_every: int, restart_threshold: float, key: PRNGKeyArray,
    ):
        self.codebook = jnp.asarray(numpy_rng(key).standard_normal((size, dim)), dtype=jnp.float32)
        # Start every count at 1 with the sum equal to the entry, so an unused entry stays where
        # it was initialised instead of being divided by a near-zero count.
        self.cluster_size = jnp.ones((size,))
        self.embed_sum = self.codebook
        self.restarted = jnp.zeros((), jnp.int32)
        self.decay = decay
        self.commitment = commitment
        self.restarts = restarts
        self.restart_every = restart_every
        self.restart_threshold = restart_threshold

    @property
    def vocab_size(self) -> int:
        return self.codebook.shape[0]

    @property
    def restart_picks(self) -> int:
        """Random latents ``update`` needs per step: one per entry that may be restarted."""
        return self.vocab_size if self.restarts else 0

    def _nearest(self, z: Float[Array, "N D"]) -> Int[Array, " N"]:
        distances = (
            jnp.sum(z**2, axis=-1, keepdims=True)
            - 2 * z @ self.codebook.T
            + jnp.sum(self.codebook**2, axis=-1)[None, :]
        )  # (N, K)
        return jnp.argmin(distances, axis=-1).astype(jnp.int32)

    def quantize(self, z: Float[Array, "N D"]):
        codes = self._nearest(z)
        entries = self.codebook[codes]
        commitment = self.commitment * jnp.mean((z - jax.lax.stop_gradient(entries)) ** 2)
        z_q = z + jax.lax.stop_gradient(entries - z)
        return z_q, codes, commitment

    def encode(self, z: Float[Array, "N D"]) -> Int[Array, " N"]:
        return self._nearest(z)

    def decode(self, codes: Int[Array, " N"]) -> Float[Array, "N D"]:
        return self.codebook[codes]

    def update(
        self, z: Float[Array, "N D"], codes: Int[Array, " N"], *, picks: Int[Array, " P"],
        step: Int[Array, ""],
    ) -> EMACodebook:
        """The codebook after one batch: EMA update, then restarts of dead entries.

        Args:
            z: the batch's encoder outputs.
            codes: their nearest entries.
            picks: distinct random rows of ``z`` (``restart_picks`` of them, or all rows if
                fewer); dead entry ``k`` moves onto ``z[picks[k % P]]``.
            step: the training step (restarts happen every ``restart_every`` steps).
        """
        size = self.vocab_size
        counts = jnp.zeros((size,)).at[codes].add(1.0)
        sums = jnp.zeros_like(self.embed_sum).at[codes].add(z)
        cluster_size = self.decay * self.cluster_size + (1 - self.decay) * counts
        embed_sum = self.decay * self.embed_sum + (1 - self.decay) * sums
        total = jnp.sum(cluster_size)
        smoothed = (cluster_size + _LAPLACE) / (total + size * _LAPLACE) * total
        codebook = embed_sum / smoothed[:, None]
        restarted = self.restarted
        if self.restarts:
            due = (step > 0) & (step % self.restart_every == 0)
            dead = due & (cluster_size < self.restart_threshold)  # (K,)
            fresh = z[picks[jnp.arange(size) % picks.shape[0]]]  # (K, D)
            codebook = jnp.where(dead[:, None], fresh, codebook)
            embed_sum = jnp.where(dead[:, None], fresh, embed_sum)
            cluster_size = jnp.where(dead, 1.0, cluster_size)
            restarted = restarted + jnp.sum(dead).astype(jnp.int32)
        return eqx.tree_at(
            lambda b: (b.codebook, b.cluster_size, b.embed_sum, b.restarted),
            self,
            (codebook, cluster_size, embed_sum, restarted),
        )


@dataclasses.dataclass(frozen=True)
class VQVAEConfig(CandleConfig):
    """VQ-VAE tokenizer settings (network and training fields: see ``CandleConfig``)."""

    # The micro-GPT candle tokenizer's features: the raw log return and the candle's shape.
    features: tuple[str, ...] = ("log_return", "body", "upper_wick", "lower_wick", "range")
    codebook_size: int = 512  # K entries
    latent_dim: int = 8  # D; small latents keep nearest-neighbour search meaningful
    commitment: float = 0.25  # beta of van den Oord et al. Sec. 3.2
    decay: float = 0.99  # EMA decay of counts and sums
    restarts: bool = True  # restart dead entries from recent encoder outputs
    restart_every: int = 10  # steps between restart checks
    restart_threshold: float = 1.0  # EMA assignments per step below which an entry is dead

    def __post_init__(self) -> None:
        if isinstance(self.codebook_size, bool) or not isinstance(self.codebook_size, int):
            raise ConfigError(f"codebook_size must be an integer >= 1, got {self.codebook_size!r}")
        if self.codebook_size < 1:
            raise ConfigError(f"codebook_size must be >= 1, got {self.codebook_size}: a codebook needs entries")
        require_int(self.latent_dim, "latent_dim", 1)
        require_int(self.restart_every, "restart_every", 1)
        if not 0 < self.decay < 1:
            raise ConfigError(f"decay must lie in (0, 1), got {self.decay}")
        if self.commitment < 0:
            raise ConfigError(f"commitment must be >= 0, got {self.commitment}")
        check_positive(self.restart_threshold, "restart_threshold")
        if not isinstance(self.restarts, bool):
            raise ConfigError(f"restarts must be true or false, got {self.restarts!r}")
        super().__post_init__()


@final
class VQVAETokenizer(AbstractCandleTokenizer):
    """Candles to VQ-VAE codes: the FSQ tokenizer's CNN around a ``codebook_size``-entry EMA codebook.

    ``restarts_done`` counts the codebook entries restarted during ``fit``.
    """

    name = "vqvae"
    config_class = VQVAEConfig

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def restarts_done(self) -> int:
        return 0 if self._quantizer is None else int(self._quantizer.restarted)

    @staticmethod
    def make_quantizer(config: VQVAEConfig, key: PRNGKeyArray) -> EMACodebook:
        c = config
        return EMACodebook(
            c.codebook_size, c.latent_dim, decay=c.decay, commitment=c.commitment,
            restarts=c.restarts, restart_every=c.restart_every,
            restart_threshold=c.restart_threshold, key=key,
        )
