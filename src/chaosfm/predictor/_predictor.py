"""The whole online predictor: one pure ``update(state, x) -> (output, state)`` per observation.

Per observation ``x_t`` (a level: a price or a trajectory coordinate):

1. score the previous step: the error ``x_t - prediction`` feeds CUSUM, the kernels' predictions
   of the standardised increment feed the orchestrator (JKO step on the weights);
2. push ``x_t`` and its standardised increment into the ring buffers (increments are divided by
   an EMA scale known before ``x_t``, so every statistic is causal);
3. refresh the slow parts on their cadence (below): the Hölder exponent of the level buffer
   (WTMM), the stable fit and its Monte Carlo draws (A), the IMEX density (C, one substep per
   step when ``refresh_every > 1``), and the DGM's OU refit and online training (B; its V_z
   table and collapse monitor are remade whenever the network trains);
4. the Hölder exponent below ``hoelder_threshold``, or the CUSUM error kurtosis above
   ``kurtosis_invalid`` (the residual model is invalid), trips the circuit breaker
   (``emergency``: kernel D alone, Huber loss);
5. each kernel predicts the next standardised increment (A stable, B DGM/HJB, C IMEX
   jump-diffusion, D log-signature ridge); the mixture with the current weights is the
   prediction, and ``num_samples`` mixture draws give its distribution. While ``mode_collapse``
   is up (the DGM's monitor read collapsed for more than ``mode_collapse_steps`` warm steps)
   kernel B is suspended (``dgm_suspended``): weight 0, the others renormalised, until the
   network retrains and passes the monitor.

Missing and late observations: a non-finite ``x`` (NaN) means "no fresh observation this step"
(``chaosfm stream`` passes one for a skipped bad line or a gap in time). Such a step leaves the
state untouched (its outputs are NaN, its flags those of the state) except for the freshness
counters: after ``degraded_ttl`` such steps in a row ``degraded_inference`` is entered, and it is
left only after ``ceil(degraded_exit_fraction * degraded_ttl)`` fresh steps in a row
(hysteresis). While it is up the orchestrator's weights (and Sinkhorn potentials) are frozen,
bit for bit; the kernels, buffers and CUSUM go on learning from the fresh observations.

Kurtosis tiers (of the CUSUM's standardised errors, warm steps only): above ``kurtosis_high``
``high_volatility``, above ``kurtosis_crisis`` ``crisis``, above ``kurtosis_invalid``
``residual_invalid`` and the circuit breaker. The tiers are cumulative (crisis implies
high_volatility).

Cadence: the four slow parts are recomputed every ``refresh_every`` steps, staggered so that one
part runs per step (with the default 4: the Hölder exponent at counts 0 mod 4, the stable fit at
1 mod 4, and so on), and each step otherwise reuses the cached results in ``state.cache``; a step
then costs the cheap parts plus one slow part rather than all four. ``refresh_every = 1``
recomputes everything every step. What was recomputed is reported per step (``refreshed``, a
bit mask over ``SLOW_PARTS``). The fast parts run every step: CUSUM, the orchestrator, the
signature ridge, the DGM's drift at the current point, the mixture draws.

Meta-parameters (``meta_learning``, off by default): the orchestrator's epsilon and step size
and a spread temperature per kernel are then learned online, before each step, by Adam on the
one-step CRPS of the forecast the previous step made (``_meta.py``); the learner lives in
``state.meta`` (None when off, so the plain step and its state are unchanged).

During the first ``warmup`` observations the prediction is the last value (a random walk), the
Hölder exponent is NaN until ``hoelder.min_samples`` levels are buffered, and no flag but
``degraded_inference`` is raised. Dimension letters: N buffer,
K = 4 kernels, S samples, M stable draws, G IMEX grid.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from chaosfm._config import float_dtype
from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._cusum import CusumState, init_cusum, update_cusum
from chaosfm.predictor._draws import (
    KERNELS,
    SIGNATURE_KERNEL,
    _dgm_suspended,
    _kernel_spreads,
    _one_step,
    _prediction_weights,
    _standardised_draws,
)
from chaosfm.predictor._holder import hoelder_wtmm
from chaosfm.predictor._kernel_dgm import (
    TRAIN_COMPILER_OPTIONS,
    DGMOutput,
    DGMState,
    fit_problem,
    init_dgm,
    predict_dgm,
    refresh_dgm,
    train,
)
from chaosfm.predictor._kernel_imex import (
    IMEXOutput,
    JumpDiffusionParams,
    fit_jump_diffusion,
    imex_grid,
    imex_output,
    imex_substep,
    initial_masses,
    predict_imex,
    sde_parameters,
)
from chaosfm.predictor._kernel_signature import (
    SignatureState,
    init_signature,
    predict_signature,
    signature_features,
    update_signature,
)
from chaosfm.predictor._kernel_stable import StableOutput, StableParams, predict_stable
from chaosfm.predictor._meta import (
    MetaState,
    init_meta,
    initial_meta,
    meta_optimizer,
    remember,
    update_meta,
)
from chaosfm.predictor._orchestrator import (
    OrchestratorState,
    init_orchestrator,
    update_orchestrator,
)

# Leaves a step without a fresh observation still writes (everything else is kept as it was).
FRESHNESS_FIELDS = ("stale_steps", "fresh_steps", "degraded")
SLOW_PARTS = ("hoelder", "stable", "imex", "dgm")  # refreshed on the cadence, in this order


class IMEXProgress(NamedTuple):
    """The IMEX density being integrated, one substep per step (``refresh_every > 1``)."""

    params: JumpDiffusionParams  # fitted when this density started
    masses: jax.Array  # (G,) after ``done`` substeps
    done: jax.Array  # int32 substeps done


class KernelCache(NamedTuple):
    """Results of the slow parts, as of their last refresh."""

    hoelder: jax.Array  # NaN until defined
    stable: StableOutput  # fit, draws (M,) and their median
    imex: IMEXOutput  # density (G,) of the next increment and its moments
    dgm: DGMOutput  # entropy monitor and loss (prediction unused: it is made every step)
    imex_progress: IMEXProgress


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
    stale_steps: jax.Array  # consecutive steps without a fresh observation, capped at degraded_ttl (int32)
    fresh_steps: jax.Array  # consecutive fresh steps, capped at the exit count (int32)
    degraded: jax.Array  # bool, degraded_inference mode: orchestrator weights frozen
    cusum: CusumState
    orchestrator: OrchestratorState
    signature: SignatureState
    dgm: DGMState
    cache: KernelCache
    key: jax.Array
    # The online meta-parameter learner (config.meta_learning); None, no leaves, when it is off.
    meta: MetaState | None = None


class PredictorOutput(NamedTuple):
    prediction: jax.Array  # of the next observation
    kernel_predictions: jax.Array  # (K,) of the next observation, in its units
    samples: jax.Array  # (S,) mixture draws of the next observation
    # Spreads of the next increment (x_{t+1} - x_t, or the log return with increments="log"),
    # in its units: what each kernel's draws are spread by, and the mixture's. The 80% interval
    # is calibrated only if these track the realised increments (see docs/predictor.md#on-markets).
    kernel_stds: jax.Array  # (K,); the stable kernel's is sqrt(2) gamma, its std at alpha = 2
    mixture_std: jax.Array  # standard deviation of the mixture draws
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
    sinkhorn_fallback: jax.Array  # Sinkhorn failed twice: the weights fell back to uniform
    degraded_inference: jax.Array  # no fresh observation for degraded_ttl steps; weights frozen
    emergency: jax.Array  # circuit breaker: Hölder below threshold or residual_invalid
    regime_change: jax.Array
    mode_collapse: jax.Array
    dgm_suspended: jax.Array  # kernel B's weight is 0 (mode collapse, until the monitor passes)
    high_volatility: jax.Array  # error kurtosis above kurtosis_high
    crisis: jax.Array  # error kurtosis above kurtosis_crisis
    residual_invalid: jax.Array  # error kurtosis above kurtosis_invalid (engages emergency)
    error: jax.Array  # x_t minus the previous prediction
    warm: jax.Array  # bool: past warm-up
    count: jax.Array  # int32 observations seen, this one included
    refreshed: jax.Array  # int32 bit mask: bit j set if SLOW_PARTS[j] was recomputed this step


def init_predictor(config: PredictorConfig, first_value: float, *, key: jax.Array) -> PredictorState:
    """The state after the first observation ``first_value``.

    The state's floats are float64 when JAX's x64 is on (``--x64``, ``CHAOSFM_X64=1``), else
    float32; every step then computes in that dtype (it follows the state's).
    """
    dtype = float_dtype()
    size = config.buffer_size
    key, key_dgm = jax.random.split(key)
    # Per-step draws and splits use XLA's RngBitGenerator ("unsafe_rbg" keys, derived from the
    # given key): on CPU threefry runs as rolled loops, ~60 thunks and ~40 us per draw or split,
    # a third of the step. "rbg" would still split with threefry. The price is that split keys
    # are not guaranteed independent as threefry's are; for Monte Carlo draws of a forecast
    # mixture that is immaterial.
    key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")
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
        stale_steps=jnp.zeros((), jnp.int32),
        fresh_steps=jnp.zeros((), jnp.int32),
        degraded=jnp.zeros((), bool),
        cusum=init_cusum(config.cusum, dtype),
        orchestrator=init_orchestrator(len(KERNELS), dtype),
        signature=signature,
        dgm=init_dgm(key_dgm, problem, config.dgm),
        cache=_initial_cache(config, dtype),
        key=key,
        meta=init_meta(initial_meta(config, len(KERNELS), dtype), meta_optimizer(config)) if config.meta_learning else None,
    )


def _initial_cache(config: PredictorConfig, dtype) -> KernelCache:
    """Neutral stand-ins until each part's first refresh (all happen before warm-up ends)."""
    zero, nan = jnp.zeros((), dtype), jnp.full((), jnp.nan, dtype)
    grid = jnp.linspace(-config.imex.grid_width, config.imex.grid_width, config.imex.grid_size, dtype=dtype)
    gaussian = jnp.exp(-0.5 * grid**2) / jnp.sqrt(2.0 * jnp.pi)
    one = jnp.ones((), dtype)
    return KernelCache(
        hoelder=nan,
        stable=StableOutput(
            prediction=zero,
            draws=jnp.zeros((config.stable.num_draws,), dtype),
            params=StableParams(alpha=2.0 * one, beta=zero, gamma=one, delta=zero),
        ),
        imex=IMEXOutput(prediction=zero, std=one, density=gaussian, grid=grid, residual=zero),
        dgm=DGMOutput(prediction=zero, entropy=nan, collapsed=jnp.zeros((), bool), loss=zero),
        imex_progress=IMEXProgress(
            params=JumpDiffusionParams(mean=zero, sigma=one, jump_rate=zero, jump_mean=zero, jump_std=one),
            masses=initial_masses(grid),
            done=jnp.zeros((), jnp.int32),
        ),
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
    """Feed one observation; see the module docstring. Jit with ``config`` closed over.

    ``value`` NaN (or any non-finite value) means no fresh observation this step: the state is
    kept but for its freshness counters (see the module docstring, degraded_inference).
    """
    out, new_state = _unguarded_update(state, value, config)
    return out, _keep_if_finite(value, new_state, state, freshness_mask(new_state))


def freshness_mask(state: PredictorState) -> PredictorState:
    """A tree like ``state`` of booleans: True on the leaves a non-fresh step still writes."""
    return state._replace(
        **{name: True for name in FRESHNESS_FIELDS},
        **{name: jax.tree_util.tree_map(lambda _: False, getattr(state, name))
           for name in PredictorState._fields if name not in FRESHNESS_FIELDS},
    )


def _keep_if_finite(value: jax.Array, new, old, written=None):
    """``new`` if ``value`` is finite, else ``old`` (any matching pytrees: states or packed).

    ``written``, a matching tree of booleans (or arrays of them), marks leaves or entries that
    take ``new`` whatever ``value`` is.
    """
    good = jnp.isfinite(value)
    if written is None:
        return jax.tree_util.tree_map(lambda n, o: jnp.where(good, n, o), new, old)
    return jax.tree_util.tree_map(lambda n, o, w: jnp.where(good | jnp.asarray(w, bool), n, o), new, old, written)


def _unguarded_update(state: PredictorState, value: jax.Array, config: PredictorConfig):
    with jax.default_matmul_precision("highest"):
        return _update(state, jnp.asarray(value, state.last.dtype), config)


def _update(state: PredictorState, x: jax.Array, config: PredictorConfig):
    dtype = x.dtype
    size = config.buffer_size
    warm_before = state.count >= config.warmup
    key, key_stable, key_dgm, key_draws = jax.random.split(state.key, 4)

    # 0. Freshness and degraded_inference (a non-finite x is a missing or late observation).
    fresh = jnp.isfinite(x)
    exit_steps = config.degraded_exit_steps
    stale_steps = jnp.where(fresh, 0, jnp.minimum(state.stale_steps + 1, config.degraded_ttl))
    fresh_steps = jnp.where(fresh, jnp.minimum(state.fresh_steps + 1, exit_steps), 0)
    degraded = (stale_steps >= config.degraded_ttl) | (state.degraded & (fresh_steps < exit_steps))

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
    meta_state, learned = state.meta, {}
    if config.meta_learning:
        # Score the forecast the previous step made and move the meta-parameters before this
        # step uses them (causal: x is the newest data the gradient sees).
        one_step = _one_step(state, standardised, fresh, config, jax.random.fold_in(key_draws, 1))
        params, meta_state, _ = update_meta(
            state.meta, one_step, config, meta_optimizer(config), SIGNATURE_KERNEL
        )
        learned = {"step_size": params.step_size, "epsilon": params.epsilon}
    orch_out, orch_state = update_orchestrator(
        state.orchestrator,
        state.kernel_predictions,
        standardised,
        alarm=alarm,
        emergency=state.emergency,
        config=config.orchestrator,
        **learned,
    )
    orch_state = jax.tree_util.tree_map(
        lambda n, o: jnp.where(warm_before & ~degraded, n, o), orch_state, state.orchestrator
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

    # 3. The slow parts, on their staggered cadence.
    path = jnp.cumsum(increments)
    available = jnp.minimum(count, size)

    # Only what a refresh writes passes through the switch: XLA copies every buffer a branch
    # returns, and the network and its Adam moments (~110 arrays) are read-only unless the DGM
    # trains online.
    trains_online = config.dgm.online_steps > 0

    def refresh(part: str, cache: KernelCache, dgm):
        if part == "hoelder":
            out = hoelder_wtmm(levels, config.hoelder, available=available)
            return cache._replace(hoelder=out.hoelder), dgm
        if part == "stable":
            return cache._replace(stable=predict_stable(increments, valid, config.stable, key=key_stable)), dgm
        if part == "imex":
            return cache._replace(imex=predict_imex(increments, valid, config.imex)), dgm
        full = dgm if trains_online else state.dgm._replace(problem=dgm)
        full, out = refresh_dgm(full, path, valid, config.dgm, key=key_dgm)
        return cache._replace(dgm=out), full if trains_online else full.problem

    cadence = config.refresh_every
    # With a cadence the IMEX density is integrated one substep per step (a fresh fit every
    # ``imex.substeps`` steps), so no step pays for all of it; the other parts take turns.
    pipelined = cadence > 1
    switched = [j for j, part in enumerate(SLOW_PARTS) if not (pipelined and part == "imex")]
    schedule = [[j for i, j in enumerate(switched) if i % cadence == phase] for phase in range(cadence)]

    def branch(parts):
        def run(operand):
            cache, dgm = operand
            for j in parts:
                cache, dgm = refresh(SLOW_PARTS[j], cache, dgm)
            return cache, dgm

        return run

    phase = count % cadence
    operand = (state.cache, state.dgm if trains_online else state.dgm.problem)
    cache, dgm = jax.lax.switch(phase, [branch(parts) for parts in schedule], operand)
    dgm_state = dgm if trains_online else state.dgm._replace(problem=dgm)
    refreshed = jnp.asarray([sum(1 << j for j in parts) for parts in schedule], jnp.int32)[phase]
    if pipelined:
        progress = cache.imex_progress
        start = progress.done == 0
        fitted = sde_parameters(fit_jump_diffusion(increments, valid, config.imex), config.imex)
        params = jax.tree_util.tree_map(lambda new, old: jnp.where(start, new, old), fitted, progress.params)
        masses = jnp.where(start, initial_masses(imex_grid(config.imex, dtype)), progress.masses)
        masses, residual = imex_substep(masses, params, config.imex)
        finished = progress.done + 1 == config.imex.substeps
        published = imex_output(masses, residual, config.imex)
        cache = cache._replace(
            imex=jax.tree_util.tree_map(lambda new, old: jnp.where(finished, new, old), published, cache.imex),
            imex_progress=IMEXProgress(params, masses, jnp.where(finished, 0, progress.done + 1)),
        )
        refreshed = refreshed | jnp.where(finished, 1 << SLOW_PARTS.index("imex"), 0)

    # 4. The circuit breaker; NaN (too few samples for a slope) never trips it. Kurtosis tiers
    # of the standardised errors: the last one declares the residual model invalid.
    hoelder = cache.hoelder
    kurtosis = cusum_out.kurtosis
    high_volatility, crisis, residual_invalid = kurtosis_tiers(kurtosis, config, warm=warm)
    emergency = warm & jnp.isfinite(hoelder) & (hoelder < config.hoelder_threshold)
    emergency = emergency | residual_invalid

    # 5. Kernels, in standardised increments of the next step.
    dgm_prediction = predict_dgm(dgm_state, path, valid, config.dgm)
    features = signature_features(increments[-config.signature.window :], config.signature)
    ridge_mean, _ = predict_signature(signature_state, features, config.signature)
    kernel_predictions = jnp.stack(
        [cache.stable.prediction, dgm_prediction, cache.imex.prediction, ridge_mean]
    )
    kernel_predictions = jnp.clip(jnp.nan_to_num(kernel_predictions), -20.0, 20.0)
    collapsed_steps = jnp.where(cache.dgm.collapsed & warm, state.collapsed_steps + 1, 0)
    weights = _prediction_weights(orch_state, emergency, collapsed_steps, config)
    weights = jnp.where(warm, weights, jnp.full_like(weights, 1.0 / len(KERNELS)))
    mixed = jnp.where(warm, config.drift * jnp.dot(weights, kernel_predictions), 0.0)
    prediction = _level(config, x, mixed * scale)
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
        stale_steps=stale_steps,
        fresh_steps=fresh_steps,
        degraded=degraded,
        cusum=cusum_state,
        orchestrator=orch_state,
        signature=signature_state,
        dgm=dgm_state,
        cache=cache,
        key=key,
        meta=None if meta_state is None else remember(
            meta_state, state.orchestrator, state.kernel_predictions,
            jnp.asarray(config.orchestrator.robust) | state.emergency, warm_before & ~degraded & ~alarm,
        ),
    )
    # The mixture draws come from the new state alone, so a forecaster can draw more of them,
    # or paths of them, from the state the step leaves (mixture_draws).
    kernel_stds, _ = _kernel_spreads(new_state, config)
    mixed_draws = _standardised_draws(new_state, config, (config.num_samples,), key_draws)
    samples = _level(config, x, mixed_draws * scale)
    out = PredictorOutput(
        prediction=prediction,
        kernel_predictions=_level(config, x, kernel_predictions * scale),
        samples=samples,
        kernel_stds=scale * kernel_stds,
        mixture_std=scale * jnp.std(mixed_draws),
        weights=weights,
        hoelder=hoelder,
        cusum_statistic=cusum_out.statistic,
        cusum_threshold=cusum_out.threshold,
        distance_to_alarm=cusum_out.distance,
        kurtosis=cusum_out.kurtosis,
        dgm_entropy=cache.dgm.entropy,
        free_energy=orch_out.free_energy,
        sinkhorn_iterations=orch_out.sinkhorn_iterations,
        sinkhorn_converged=orch_out.sinkhorn_converged,
        sinkhorn_fallback=orch_out.fallback & warm_before,
        degraded_inference=degraded,
        emergency=emergency,
        regime_change=alarm,
        mode_collapse=_dgm_suspended(collapsed_steps, config),
        dgm_suspended=_dgm_suspended(collapsed_steps, config),
        high_volatility=high_volatility,
        crisis=crisis,
        residual_invalid=residual_invalid,
        error=error,
        warm=warm,
        count=count,
        refreshed=refreshed,
    )
    return out, new_state


def kurtosis_tiers(
    kurtosis: jax.Array, config: PredictorConfig, *, warm: jax.Array | bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(high_volatility, crisis, residual_invalid)``: kurtosis strictly above each threshold
    (cumulative tiers), and only once warm."""
    return (
        warm & (kurtosis > config.kurtosis_high),
        warm & (kurtosis > config.kurtosis_crisis),
        warm & (kurtosis > config.kurtosis_invalid),
    )


def resume_after_gap(state: PredictorState, value: float) -> PredictorState:
    """``state`` with ``value`` as its last observation, no increment taken.

    For a stream that resumes after rows it never saw: the next observation's increment is then
    measured from ``value``, not across the gap. The level buffer keeps its older levels until
    ``buffer_size`` new ones have pushed them out.
    """
    value = jnp.asarray(value, state.last.dtype)
    return state._replace(last=value, prediction=value)


@functools.lru_cache(maxsize=8)
def jitted_update(config: PredictorConfig):
    """``update_predictor`` compiled for one config (cached: a config is hashable)."""
    return jax.jit(lambda state, value: update_predictor(state, value, config))


def _warm_start(state: PredictorState, config: PredictorConfig, key: jax.Array) -> PredictorState:
    valid = (jnp.arange(config.buffer_size) >= config.buffer_size - (state.count - 1)).astype(state.last.dtype)
    problem, _, _ = fit_problem(jnp.cumsum(state.increments), valid)
    trained, _ = train(state.dgm._replace(problem=problem), key, config.dgm.fit_steps, config.dgm)
    return state._replace(dgm=trained)


@functools.lru_cache(maxsize=8)
def _jitted_warm_start(config: PredictorConfig):
    return jax.jit(lambda state, key: _warm_start(state, config, key), compiler_options=TRAIN_COMPILER_OPTIONS)


def warm_start(state: PredictorState, config: PredictorConfig, *, key: jax.Array) -> PredictorState:
    """Train the DGM network for ``config.dgm.fit_steps`` on the buffer seen so far."""
    if config.dgm.fit_steps == 0:
        return state
    return _jitted_warm_start(config)(state, key)

