"""The JEPA's training objective: VICReg on block-masked windows (+ Barlow Twins and the
cross-resolution term when weighted), and the EMA update of the target encoder.

The model, its config and its predictors are in ``_jepa.py``; this file is what the training loop
calls on them (``jepa_loss`` as the loss, ``ema_post_update`` as the post-update).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from chaosfm.models._cfm import cfm_loss
from chaosfm.models._jepa import JEPA
from chaosfm.models._ssl_losses import barlow_twins_loss, cross_resolution_loss, downsample_pairs
from chaosfm.models._vicreg import (
    block_masks,
    ema_update,
    vicreg_covariance,
    vicreg_invariance,
    vicreg_variance,
    weighted_moments,
)

__all__ = ["ema_post_update", "jepa_loss"]

_F32 = jnp.float32


def ema_post_update(decay: float):
    """The training loop's ``post_update``: the target encoder follows the context encoder by EMA.

    Returns ``f(old_params, new_params, step) -> params`` where ``new_params.target_encoder`` is
    replaced by ``decay * old.target_encoder + (1 - decay) * new.encoder`` (the optimizer's own
    change to the target encoder, weight decay on a zero gradient, is discarded).
    """

    def post_update(old: JEPA, new: JEPA, step: Any) -> JEPA:
        target = ema_update(old.target_encoder, new.encoder, decay)
        return eqx.tree_at(lambda m: m.target_encoder, new, target)

    return post_update


def _one_window(model: JEPA, features: Array, key: PRNGKeyArray) -> dict[str, Array]:
    config = model.config
    length = features.shape[0]
    masks = block_masks(
        key,
        length,
        n_blocks=config.n_blocks,
        min_span=config.min_span,
        max_span=config.max_span,
        min_future=config.min_future,
        max_future=config.max_future,
    )
    # Hidden steps never reach the context encoder, whatever it does with time.
    context = model.encoder(model.encoder.hide(features, masks.context))
    target = jax.lax.stop_gradient(model.target_encoder(features))
    predicted = model.predictor(context, masks.context)
    target_steps = jnp.any(masks.targets, axis=0)
    out = {
        "context": context,
        "target": target,
        "predicted": predicted,
        "context_mask": masks.context,
        "target_mask": target_steps,
    }
    last = masks.cut - 1
    out["last"] = context[last]  # the window's embedding: its last visible step
    if config.cross_resolution_weight > 0:
        # The same window at half the sampling rate, read whole by the context encoder.
        coarse = downsample_pairs(features)
        if model.encoder.clocked:  # a coarse step spans both bars' market time: the sum, not the mean
            coarse = coarse.at[:, -1].multiply(2.0)
        out["coarse"] = model.encoder(coarse)
    if model.flow is not None:
        out["condition"] = context[last]
        out["future"] = target[last + config.cfm_horizon]
    return out


def jepa_loss(
    model: JEPA, batch: dict[str, Array], key: PRNGKeyArray
) -> tuple[Array, dict[str, Array]]:
    """VICReg JEPA loss (+ ``barlow_weight`` x Barlow Twins, ``cross_resolution_weight`` x the
    cross-resolution consistency, ``cfm_weight`` x OT-CFM) of a batch of windows: ``features (B, L, F)``,
    or ``codes (B, L)`` for an encoder that reads codes."""
    config = model.config
    features = batch["codes"] if config.reads_codes else batch["features"]
    size, length = features.shape[:2]
    mask_key, flow_key = jax.random.split(key)
    parts = jax.vmap(_one_window, in_axes=(None, 0, 0))(model, features, jax.random.split(mask_key, size))
    dim = config.d_embed
    flat = lambda x: x.reshape(size * length, dim)  # noqa: E731 - (B * L, E)
    target_weight = parts["target_mask"].reshape(-1).astype(_F32)
    context_weight = parts["context_mask"].reshape(-1).astype(_F32)
    invariance = vicreg_invariance(flat(parts["predicted"]), flat(parts["target"]), target_weight)
    context = flat(parts["context"])
    variance = vicreg_variance(context, config.variance_std, context_weight)
    variance = variance + vicreg_variance(flat(parts["predicted"]), config.variance_std, target_weight)
    covariance = vicreg_covariance(context, context_weight)
    if config.window_terms:
        variance = variance + vicreg_variance(parts["last"], config.variance_std)
        covariance = covariance + vicreg_covariance(parts["last"])
    loss = (
        config.invariance_weight * invariance
        + config.variance_weight * variance
        + config.covariance_weight * covariance
    )
    _, cov = weighted_moments(jax.lax.stop_gradient(context), context_weight)
    std = jnp.sqrt(jnp.diagonal(cov))
    metrics = {
        "invariance": invariance,
        "variance": variance,
        "covariance": covariance,
        "embedding_std": jnp.mean(std),
    }
    if config.barlow_weight > 0:
        barlow = barlow_twins_loss(
            flat(parts["predicted"]), flat(parts["target"]), target_weight, off_diagonal_weight=config.barlow_lambda
        )
        loss = loss + config.barlow_weight * barlow
        metrics["barlow"] = barlow
    if config.cross_resolution_weight > 0:
        cross = cross_resolution_loss(parts["coarse"], parts["target"])  # the target is stop-gradient
        loss = loss + config.cross_resolution_weight * cross
        metrics["cross_resolution"] = cross
    if model.flow is not None:
        flow = cfm_loss(
            model.flow,
            flow_key,
            parts["future"],
            parts["condition"],
            noise_scale=config.noise_scale,
            epsilon=config.cfm_epsilon,
        )
        # The flow works at the scale of embedding differences (~1/d); rescale to the VICReg terms'.
        loss = loss + config.cfm_weight * config.invariance_weight * flow
        metrics["cfm"] = flow
    return loss, metrics
