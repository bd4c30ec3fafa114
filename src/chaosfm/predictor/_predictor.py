"""The whole online predictor: one pure ``update(state, x) -> (output, state)`` per observation.

Per observation ``x_t`` (a level: a price or a trajectory coordinate):

1. score the previous step: the error ``x_t - prediction`` feeds CUSUM, the kernels' predictions
   of the standardised increment feed the orchestrator (JKO step on the weights);
2. push ``x_t`` and its standardised increment into the ring buffers (increments are divided by
   an EMA scale known before ``x_t``, so every statistic is causal);
3. estimate the Hölder exponent of the level buffer (WTMM); below ``hoelder_threshold`` the
   circuit breaker trips (``emergency``: kernel D alone, Huber loss);
4. each kernel predicts the next standardised increment (A stable, B DGM/HJB, C IMEX
   jump-diffusion, D log-signature ridge); the mixture with the current weights is the
   prediction, and ``num_samples`` mixture draws give its distribution.

During the first ``warmup`` observations the prediction is the last value (a random walk) and no
flag is raised. A non-finite ``x`` leaves the state untouched (the output is NaN). Dimension
letters: N buffer, K = 4 kernels, S samples.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._cusum import CusumState, init_cusum, update_cusum
from chaosfm.predictor._holder import hoelder_wtmm
from chaosfm.predictor._kernel_dgm import DGMState, fit_problem, init_dgm, train, update_dgm
from chaosfm.predictor._kernel_imex import predict_imex, sample_density
from chaosfm.predictor._kernel_signature import (
    SignatureState,
    init_signature,
    predict_signature,
    signature_features,
    update_signature,
)
from chaosfm.predictor._kernel_stable import predict_stable
from chaosfm.predictor._orchestrator import (
    OrchestratorState,
    init_orchestrator,
    mixing_weights,
    update_orchestrator,
)

KERNELS = ("stable", "dgm", "imex", "signature")
SIGNATURE_KERNEL = KERNELS.index("signature")


class PredictorState(NamedTuple):
    count: jax.Array  # observations seen (int32)
    last: jax.Array  # x_{t-1}
    scale: jax.Array  # EMA RMS of increments
    levels: jax.Array  # (N,) ring-ordered: newest last
    increments: jax.Array  # (N,) standardised increments, newest last
    prediction: jax.Array  # prediction of the current observation made at the previous step
    kernel_predictions: jax.Array  # (K,) standardised, made at the previous step
    features: jax.Array  # (F,) log-signature features at the previous step
    emergency: jax.Array  # bool, circuit breaker state used by the last prediction
    collapsed_steps: jax.Array  # consecutive DGM-collapsed steps (int32)
    cusum: CusumState
    orchestrator: OrchestratorState
    signature: SignatureState
    dgm: DGMState
    key: jax.Array


class PredictorOutput(NamedTuple):
    prediction: jax.Array  # of the next observation
    kernel_predictions: jax.Array  # (K,) of the next observation, in its units
    samples: jax.Array  # (S,) mixture draws of the next observation
    weights: jax.Array  # (K,) used for the prediction
    hoelder: jax.Array
    cusum_statistic: jax.Array
    cusum_threshold: jax.Array
    distance_to_alarm: jax.Array
    kurtosis: jax.Array
    dgm_entropy: jax.Array
    free_energy: jax.Array
    sinkhorn_iterations: jax.Array
    sinkhorn_converged: jax.Array
    degraded_inference: jax.Array
    emergency: jax.Array
    regime_change: jax.Array
    mode_collapse: jax.Array
    error: jax.Array  # x_t minus the previous prediction
    warm: jax.Array  # bool: past warm-up


def init_predictor(config: PredictorConfig, first_value: float, *, key: jax.Array) -> PredictorState:
    """The state after the first observation ``first_value``."""
    dtype = jnp.float32
    size = config.buffer_size
    key, key_dgm = jax.random.split(key)
    levels = jnp.full((size,), first_value, dtype)
    increments = jnp.zeros((size,), dtype)
    problem, _, _ = fit_problem(levels, jnp.zeros((size,), dtype))
    signature = init_signature(config.signature, dtype)
    return PredictorState(
        count=jnp.ones((), jnp.int32),
        last=jnp.asarray(first_value, dtype),
        scale=jnp.zeros((), dtype),
        levels=levels,
        increments=increments,
        prediction=jnp.asarray(first_value, dtype),
        kernel_predictions=jnp.zeros((len(KERNELS),), dtype),
        features=jnp.zeros_like(signature.moment),
        emergency=jnp.zeros((), bool),
        collapsed_steps=jnp.zeros((), jnp.int32),
        cusum=init_cusum(config.cusum, dtype),
        orchestrator=init_orchestrator(len(KERNELS), dtype),
        signature=signature,
        dgm=init_dgm(key_dgm, problem, config.dgm),
        key=key,
    )


def _increment(config: PredictorConfig, new: jax.Array, old: jax.Array) -> jax.Array:
    if config.increments == "log":
        return jnp.log(new) - jnp.log(old)
    return new - old


def _level(config: PredictorConfig, last: jax.Array, increment: jax.Array) -> jax.Array:
    if config.increments == "log":
        return last * jnp.exp(increment)
    return last + increment


def update_predictor(
    state: PredictorState, value: jax.Array, config: PredictorConfig
) -> tuple[PredictorOutput, PredictorState]:
    """Feed one observation; see the module docstring. Jit with ``config`` closed over."""
    with jax.default_matmul_precision("highest"):
        out, new_state = _update(state, jnp.asarray(value, state.last.dtype), config)
    good = jnp.isfinite(value)
    new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(good, n, o), new_state, state)
    return out, new_state


def _update(state: PredictorState, x: jax.Array, config: PredictorConfig):
    dtype = x.dtype
    size = config.buffer_size
    warm_before = state.count >= config.warmup
    key, key_stable, key_dgm, key_pick, key_imex, key_gauss = jax.random.split(state.key, 6)

    # 1. Score the previous prediction.
    error = x - state.prediction
    cusum_out, cusum_state = update_cusum(state.cusum, error, config.cusum)
    cusum_state = jax.tree_util.tree_map(
        lambda n, o: jnp.where(warm_before, n, o), cusum_state, state.cusum
    )
    alarm = cusum_out.alarm & warm_before
    raw_increment = _increment(config, x, state.last)
    safe_scale = jnp.where(state.scale > 0, state.scale, jnp.maximum(jnp.abs(raw_increment), 1e-8))
    standardised = jnp.clip(raw_increment / safe_scale, -50.0, 50.0)
    orch_out, orch_state = update_orchestrator(
        state.orchestrator,
        state.kernel_predictions,
        standardised,
        alarm=alarm,
        emergency=state.emergency,
        config=config.orchestrator,
    )
    orch_state = jax.tree_util.tree_map(
        lambda n, o: jnp.where(warm_before, n, o), orch_state, state.orchestrator
    )
    signature_state = update_signature(state.signature, state.features, standardised, config.signature)
    signature_state = jax.tree_util.tree_map(
        lambda n, o: jnp.where(state.count > config.signature.window, n, o),
        signature_state,
        state.signature,
    )

    # 2. Buffers and scale.
    count = state.count + 1
    decay = jnp.maximum(config.scale_decay, 1.0 / (count.astype(dtype) - 1.0))
    scale = jnp.sqrt((1.0 - decay) * state.scale**2 + decay * raw_increment**2)
    scale = jnp.maximum(scale, 1e-12)
    levels = jnp.roll(state.levels, -1).at[-1].set(x)
    increments = jnp.roll(state.increments, -1).at[-1].set(standardised)
    valid = (jnp.arange(size) >= size - (count - 1)).astype(dtype)  # slots holding increments
    warm = count >= config.warmup

    # 3. Roughness and the circuit breaker.
    hoelder = hoelder_wtmm(levels, config.hoelder).hoelder
    emergency = warm & (hoelder < config.hoelder_threshold)

    # 4. Kernels, in standardised increments of the next step.
    stable = predict_stable(increments, valid, config.stable, key=key_stable)
    path = jnp.cumsum(increments)
    dgm_out, dgm_state = update_dgm(state.dgm, path, valid, config.dgm, key=key_dgm)
    imex = predict_imex(increments, valid, config.imex)
    features = signature_features(increments[-config.signature.window :], config.signature)
    ridge_mean, ridge_std = predict_signature(signature_state, features, config.signature)
    kernel_predictions = jnp.stack([stable.prediction, dgm_out.prediction, imex.prediction, ridge_mean])
    kernel_predictions = jnp.clip(jnp.nan_to_num(kernel_predictions), -20.0, 20.0)
    weights = mixing_weights(orch_state, emergency, SIGNATURE_KERNEL)
    weights = jnp.where(warm, weights, jnp.full_like(weights, 1.0 / len(KERNELS)))
    mixed = jnp.where(warm, jnp.dot(weights, kernel_predictions), 0.0)
    prediction = _level(config, x, mixed * scale)

    # Mixture draws: a kernel per draw by weight, then that kernel's predictive distribution.
    draws = config.num_samples
    pick = jax.random.categorical(key_pick, jnp.log(jnp.maximum(weights, 1e-30)), shape=(draws,))
    gauss = jax.random.normal(key_gauss, (draws,), dtype)
    per_kernel = jnp.stack(
        [
            jnp.resize(stable.draws, (draws,)),
            dgm_out.prediction + gauss * dgm_state.problem.sigma,
            sample_density(key_imex, imex, (draws,)),
            ridge_mean + gauss * ridge_std,
        ]
    )  # (K, S)
    mixed_draws = jnp.take_along_axis(per_kernel, pick[None, :], axis=0)[0]
    mixed_draws = jnp.where(warm, jnp.clip(jnp.nan_to_num(mixed_draws), -50.0, 50.0), gauss)
    samples = _level(config, x, mixed_draws * scale)

    collapsed_steps = jnp.where(dgm_out.collapsed & warm, state.collapsed_steps + 1, 0)
    new_state = PredictorState(
        count=count,
        last=x,
        scale=scale,
        levels=levels,
        increments=increments,
        prediction=prediction,
        kernel_predictions=kernel_predictions,
        features=features,
        emergency=emergency,
        collapsed_steps=collapsed_steps,
        cusum=cusum_state,
        orchestrator=orch_state,
        signature=signature_state,
        dgm=dgm_state,
        key=key,
    )
    out = PredictorOutput(
        prediction=prediction,
        kernel_predictions=_level(config, x, kernel_predictions * scale),
        samples=samples,
        weights=weights,
        hoelder=hoelder,
        cusum_statistic=cusum_out.statistic,
        cusum_threshold=cusum_out.threshold,
        distance_to_alarm=cusum_out.distance,
        kurtosis=cusum_out.kurtosis,
        dgm_entropy=dgm_out.entropy,
        free_energy=orch_out.free_energy,
        sinkhorn_iterations=orch_out.sinkhorn_iterations,
        sinkhorn_converged=orch_out.sinkhorn_converged,
        degraded_inference=orch_out.degraded & warm_before,
        emergency=emergency,
        regime_change=alarm,
        mode_collapse=collapsed_steps > config.mode_collapse_steps,
        error=error,
        warm=warm,
    )
    return out, new_state


@functools.lru_cache(maxsize=8)
def jitted_update(config: PredictorConfig):
    """``update_predictor`` compiled for one config (cached: a config is hashable)."""
    return jax.jit(lambda state, value: update_predictor(state, value, config))


@functools.lru_cache(maxsize=8)
def _jitted_train(config: PredictorConfig):
    return jax.jit(lambda dgm, key: train(dgm, key, config.dgm.fit_steps, config.dgm)[0])


def warm_start(state: PredictorState, config: PredictorConfig, *, key: jax.Array) -> PredictorState:
    """Train the DGM network for ``config.dgm.fit_steps`` on the buffer seen so far."""
    if config.dgm.fit_steps == 0:
        return state
    valid = (jnp.arange(config.buffer_size) >= config.buffer_size - (state.count - 1)).astype(jnp.float32)
    problem, _, _ = fit_problem(jnp.cumsum(state.increments), valid)
    dgm = DGMState(state.dgm.params, state.dgm.opt_state, problem)
    return state._replace(dgm=_jitted_train(config)(dgm, key))
