"""The candle autoencoders' training: the learning-rate schedule, the loss (reconstruction plus
the quantizer's), the held-out loss, and one jitted AdamW step that also updates the quantizer.

Letters: B windows in a batch, W window rows, F candle features, N latents, D latent width.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

if TYPE_CHECKING:
    from chaosfm.tokenizers._candle import CandleConfig


def learning_rate(step: Array, steps: Array, peak: float) -> Array:
    """Linear warm-up over the first 5% of ``steps``, then cosine decay to 5% of ``peak``."""
    warm = jnp.maximum(steps // 20, 1)
    rising = peak * (step + 1) / warm
    done = jnp.clip((step - warm) / jnp.maximum(steps - warm, 1), 0.0, 1.0)
    falling = 0.05 * peak + 0.95 * peak * 0.5 * (1 + jnp.cos(jnp.pi * done))
    return jnp.where(step < warm, rising, falling)


def _autoencoder_loss(networks: Any, quantizer: Any, batch: Float[Array, "B W F"]):
    """Reconstruction MSE (standardised units) plus the quantizer's loss of a batch of windows,
    with ``(mse, latents (N, D), codes (N,))`` for the step's statistics and quantizer update."""
    z = jax.vmap(networks.encoder)(batch)  # (B, W / P, D)
    flat = z.reshape(-1, z.shape[-1])  # (B * W / P, D)
    z_q, codes, aux = quantizer.quantize(flat)
    recon = jax.vmap(networks.decoder)(z_q.reshape(z.shape))  # (B, W, F)
    mse = jnp.mean((recon - batch) ** 2)
    return mse + aux, (mse, flat, codes)


@eqx.filter_jit
def _heldout_loss(networks: Any, quantizer: Any, batch: Float[Array, "B W F"]) -> Array:
    """The training loss of held-out windows, without a gradient or a quantizer update."""
    return _autoencoder_loss(networks, quantizer, batch)[0]


@functools.lru_cache(maxsize=16)
def _train_step(config: CandleConfig):
    """The optimiser (AdamW with clipping), its jitted ``init`` and one jitted training step.

    Cached per config, and the step count is an argument, not a constant: fitting the same
    tokenizer again compiles nothing.
    """
    window = config.window
    # optax.adamw without its learning rate, which the step applies from learning_rate().
    optimiser = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.scale_by_adam(),
        optax.add_decayed_weights(config.weight_decay),
    )

    @eqx.filter_jit
    def step(networks, quantizer, opt_state, data, window_starts, restart_picks, step_index, steps):
        features = data.shape[1]
        batch = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s, 0), (window, features)))(
            window_starts
        )  # (B, W, F)

        def loss_fn(nets):
            return _autoencoder_loss(nets, quantizer, batch)

        (loss, (mse, flat, codes)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(networks)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(networks, eqx.is_array))
        rate = learning_rate(step_index, steps, config.learning_rate)
        networks = eqx.apply_updates(networks, jax.tree.map(lambda u: -rate * u, updates))
        quantizer = quantizer.update(
            jax.lax.stop_gradient(flat), codes, picks=restart_picks, step=step_index
        )
        seen = jnp.zeros(quantizer.vocab_size, jnp.int32).at[codes].add(1)
        stats = {"loss": loss, "mse": mse, "batch_usage": jnp.mean(seen > 0)}
        return networks, quantizer, opt_state, stats

    return optimiser, step, eqx.filter_jit(optimiser.init)
