"""The predictor's mixture: each kernel's draws of the next standardised increment, the weights a
prediction mixes them with, and the mixture's draws (of a step, of a forecaster's paths, and of
the one-step forecast the meta-parameters are scored on).

Dimension letters: K = 4 kernels, S samples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._kernel_dgm import predictive_std
from chaosfm.predictor._kernel_imex import sample_density
from chaosfm.predictor._kernel_stable import sample_stable
from chaosfm.predictor._meta import OneStep, tempered
from chaosfm.predictor._orchestrator import mixing_weights

if TYPE_CHECKING:
    from chaosfm.predictor._predictor import PredictorState

KERNELS = ("stable", "dgm", "imex", "signature")
SIGNATURE_KERNEL = KERNELS.index("signature")
DGM_KERNEL = KERNELS.index("dgm")


def _dgm_suspended(collapsed_steps: jax.Array, config: PredictorConfig) -> jax.Array:
    """Mode collapse: the monitor read collapsed for more than ``mode_collapse_steps`` warm steps.

    It clears on the first step the monitor passes (the monitor is remade when the network trains).
    """
    return collapsed_steps > config.mode_collapse_steps


def _prediction_weights(orchestrator, emergency, collapsed_steps, config: PredictorConfig) -> jax.Array:
    """The mixing weights of a prediction: emergency override, kernel B out while suspended."""
    suspended = (jnp.arange(len(KERNELS)) == DGM_KERNEL) & _dgm_suspended(collapsed_steps, config)
    return mixing_weights(orchestrator, emergency, SIGNATURE_KERNEL, suspended)


def _kernel_spreads(state: PredictorState, config: PredictorConfig) -> tuple[jax.Array, jax.Array]:
    """Each kernel's spread of the next standardised increment ``(K,)``, and whether warm.

    The stable kernel's is ``sqrt(2) gamma`` (its standard deviation at alpha = 2; heavier tails
    have none); the others are standard deviations of what :func:`_standardised_draws` samples.
    """
    size = config.buffer_size
    valid = (jnp.arange(size) >= size - (state.count - 1)).astype(state.last.dtype)
    dgm_std = predictive_std(state.dgm, jnp.cumsum(state.increments), valid)
    spreads = jnp.stack(
        [
            jnp.sqrt(2.0) * state.cache.stable.params.gamma,
            dgm_std,
            state.cache.imex.std,
            jnp.sqrt(state.signature.residual_variance),
        ]
    )
    return spreads, state.count >= config.warmup


def _kernel_draws(
    state: PredictorState, spreads: jax.Array, gauss: jax.Array, key_stable: jax.Array, key_imex: jax.Array
) -> jax.Array:
    """Draws ``(K, S)`` of the next standardised increment from each kernel (temperature 1):
    the stable law of the last fit, the DGM drift and the signature ridge with Gaussian noise
    ``gauss`` ``(S,)`` of their spreads, the IMEX density by inverse CDF."""
    means = state.kernel_predictions
    count = gauss.shape[0]
    return jnp.stack(
        [
            sample_stable(key_stable, state.cache.stable.params, (count,)),
            means[1] + gauss * spreads[1],
            sample_density(key_imex, state.cache.imex, (count,)),
            means[3] + gauss * spreads[3],
        ]
    )


def _one_step(
    state: PredictorState, target: jax.Array, fresh: jax.Array, config: PredictorConfig, key: jax.Array
) -> OneStep:
    """The forecast ``state`` made of the next standardised increment, scored against ``target``
    (for the meta-parameters' gradient): fresh kernel draws at temperature 1."""
    key_stable, key_imex, key_gauss, key_normal = jax.random.split(key, 4)
    dtype = state.last.dtype
    count = config.num_samples
    spreads, warm = _kernel_spreads(state, config)
    gauss = jax.random.normal(key_gauss, (count,), dtype)
    suspended = (jnp.arange(len(KERNELS)) == DGM_KERNEL) & _dgm_suspended(state.collapsed_steps, config)
    meta = state.meta
    return OneStep(
        orchestrator=meta.previous_orchestrator,
        predictions=meta.previous_predictions,
        observed=state.increments[-1],
        robust=meta.previous_robust,
        stepped=meta.previous_stepped,
        weights=state.orchestrator.weights,
        means=state.kernel_predictions,
        spreads=spreads,
        kernel_draws=_kernel_draws(state, spreads, gauss, key_stable, key_imex),
        normal_draws=jax.random.normal(key_normal, (count,), dtype),
        emergency=state.emergency,
        suspended=suspended,
        target=target,
        active=warm & fresh,
    )


def _standardised_draws(
    state: PredictorState, config: PredictorConfig, shape: tuple[int, ...], key: jax.Array
) -> jax.Array:
    """I.i.d. draws ``shape`` of the next standardised increment from the state's mixture.

    A kernel per draw by weight, then a draw from that kernel's predictive distribution: the
    stable law of the last fit (fresh draws, so there are as many distinct values as draws), the
    DGM drift and the signature ridge with Gaussian noise of their spreads, the IMEX density by
    inverse CDF. Before warm-up: standard normal.
    """
    dtype = state.last.dtype
    count = math.prod(shape)
    key_pick, key_stable, key_imex, key_gauss = jax.random.split(key, 4)
    spreads, warm = _kernel_spreads(state, config)
    means = state.kernel_predictions
    weights = _prediction_weights(state.orchestrator, state.emergency, state.collapsed_steps, config)
    # Inverse CDF of the weights (categorical's Gumbel argmax is a variadic reduce, slow on CPU).
    uniform = jax.random.uniform(key_pick, (count,), dtype) * jnp.sum(weights)
    pick = jnp.minimum(jnp.sum(uniform[:, None] >= jnp.cumsum(weights)[None, :], axis=1), len(KERNELS) - 1)
    gauss = jax.random.normal(key_gauss, (count,), dtype)
    per_kernel = _kernel_draws(state, spreads, gauss, key_stable, key_imex)  # (K, S)
    if state.meta is not None:
        temperatures = state.meta.params.temperatures
        per_kernel = tempered(per_kernel, means, temperatures)
        spreads = spreads * temperatures
    mixed = jnp.take_along_axis(per_kernel, pick[None, :], axis=0)[0]
    # drift < 1 moves the mixture's mean (the weighted kernel means) towards zero, shape kept.
    clipped = jnp.clip(jnp.nan_to_num(means), -20.0, 20.0)
    mean = jnp.dot(weights, clipped) / jnp.sum(weights)
    if config.unit_spread:
        # The mixture's spread of the standardised increment: within-kernel spreads plus the
        # spread of the kernel means around the mixture mean (the stable kernel counts sqrt(2)
        # gamma, as _kernel_spreads). Dividing by it leaves the width to the EMA scale alone.
        variance = jnp.dot(weights, jnp.nan_to_num(spreads) ** 2 + (clipped - mean) ** 2) / jnp.sum(weights)
        mixed = (mixed - mean) / jnp.sqrt(jnp.maximum(variance, 1e-6)) + mean
    if config.gaussian_share > 0:
        # Shrink the kernels' shape towards the normal: a share of the draws is N(mean, 1).
        # Keys folded from one already drawn, so the draws without a share stay as they were.
        normal = mean + jax.random.normal(jax.random.fold_in(key_gauss, 1), (count,), dtype)
        share = jax.random.uniform(jax.random.fold_in(key_gauss, 2), (count,), dtype)
        mixed = jnp.where(share < config.gaussian_share, normal, mixed)
    mixed = mixed - (1.0 - config.drift) * mean
    mixed = jnp.where(warm, jnp.clip(jnp.nan_to_num(mixed), -50.0, 50.0), gauss)
    return mixed.reshape(shape)


def mixture_draws(
    state: PredictorState, config: PredictorConfig, shape: tuple[int, ...], *, key: jax.Array
) -> jax.Array:
    """I.i.d. draws ``shape`` of the next increment (``x_{t+1} - x_t``, or the log return with
    ``increments="log"``) from the kernel mixture of ``state``, in the increment's units.

    The step's ``samples`` are ``num_samples`` of these, turned into levels. A forecaster draws
    ``(paths, horizon)`` of them at once: fresh draws rather than a resampling of the step's few.
    """
    return _standardised_draws(state, config, shape, key) * state.scale
