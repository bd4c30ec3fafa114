"""Meta-parameters of the online predictor, learned online by gradient on the one-step CRPS.

The meta-parameters are the orchestrator's Sinkhorn epsilon, the step size ``tau`` of its mirror
step (its learning rate) and one spread temperature per kernel (each kernel's draws are spread
about its prediction by this factor). They live in log form (:class:`MetaParams`), so any real
value is valid and Adam's steps are relative.

After each observation ``x_{t+1}`` the forecast made at ``t`` is scored by its CRPS, and the
gradient of that score in the meta-parameters moves them (``optax``: global-norm clipping, then
Adam). The forecast at ``t`` depends on the meta-parameters through the weights ``w_t``, made by
the orchestrator's step from ``w_{t-1}`` on the observation ``x_t`` (mirror step, then ott-jax's
unbalanced Sinkhorn, differentiated implicitly, ott's default), and through the temperatures of
the draws. The dependence of ``w_{t-1}`` on earlier meta-parameters is cut (truncated
backpropagation of one step, as in hypergradient descent, Baydin et al. 2018): the gradient at
``t + 1`` uses observations up to ``t + 1`` only, so learning is causal.

The score is the CRPS of the mixture the predictor samples (Gneiting & Raftery 2007, eq. 21, in
energy form), with every component an empirical distribution of reparameterised draws:
``CRPS = sum_k w_k E|X_k - y| - 1/2 sum_kl w_k w_l E|X_k - X_l|``. The weights enter it
exactly (no sampling of the component), so the gradient in them has no sampling noise of its
own. Within a component the pairs of distinct draws only are averaged (the fair estimator of
Ferro 2014, as ``chaosfm.evaluate.crps``).

Not differentiable, and held fixed (``stop_gradient`` in effect, as constants of the step): the
circuit breaker's switch to kernel D (one-hot weights), a CUSUM reset to uniform, a Sinkhorn
fallback to uniform, and the clipping of extreme draws. On those steps only the temperatures
get a gradient. Dimension letters: K kernels, S draws per kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._orchestrator import OrchestratorState, mixing_weights, update_orchestrator

if TYPE_CHECKING:
    import optax


class MetaParams(NamedTuple):
    """The learned meta-parameters, unconstrained (natural logs)."""

    log_epsilon: jax.Array  # () Sinkhorn entropic regularisation
    log_step_size: jax.Array  # () tau of the mirror step
    log_temperatures: jax.Array  # (K,) spread of each kernel's draws about its prediction

    @property
    def epsilon(self) -> jax.Array:
        return jnp.exp(self.log_epsilon)

    @property
    def step_size(self) -> jax.Array:
        return jnp.exp(self.log_step_size)

    @property
    def temperatures(self) -> jax.Array:
        return jnp.exp(self.log_temperatures)


class OneStep(NamedTuple):
    """One forecast of the next standardised increment, what it was made from and its target.

    ``orchestrator``, ``predictions``, ``observed`` and ``robust`` are the inputs of the weight
    step that made the forecast's weights (made at ``t`` on the observation ``x_t``); ``means``
    to ``suspended`` describe the forecast of ``x_{t+1}``; ``target`` is its realised
    standardised increment.
    """

    orchestrator: OrchestratorState  # before the weight step
    predictions: jax.Array  # (K,) the kernels' predictions of the increment ``observed``
    observed: jax.Array  # () standardised increment the weight step learnt from
    robust: jax.Array  # bool: that step used the Huber loss (circuit breaker)
    stepped: jax.Array  # bool: the predictor took that step (warm, not degraded, no reset)
    weights: jax.Array  # (K,) the weights the predictor had after it (used when not stepped)
    means: jax.Array  # (K,) the kernels' predictions of the next increment
    spreads: jax.Array  # (K,) their spreads at temperature 1
    kernel_draws: jax.Array  # (K, S) draws of each kernel at temperature 1
    normal_draws: jax.Array  # (S,) standard normal draws (the Gaussian share)
    emergency: jax.Array  # bool: the forecast puts all weight on the emergency kernel
    suspended: jax.Array  # (K,) bool: kernels with weight 0 in the forecast
    target: jax.Array  # () the realised next standardised increment
    active: jax.Array  # bool: the step is scored (a warm forecast and a fresh observation)


class MetaState(NamedTuple):
    """The online learner: the parameters, Adam's state and the inputs of the last weight step."""

    params: MetaParams
    opt_state: optax.OptState
    previous_orchestrator: OrchestratorState  # the orchestrator before the last weight step
    previous_predictions: jax.Array  # (K,) what the last weight step learnt from
    previous_robust: jax.Array  # bool
    previous_stepped: jax.Array  # bool


def initial_meta(config: PredictorConfig, num_kernels: int, dtype=jnp.float32) -> MetaParams:
    """The config's epsilon and step size, every temperature 1: the predictor without learning."""
    return MetaParams(
        log_epsilon=jnp.log(jnp.asarray(config.orchestrator.epsilon, dtype)),
        log_step_size=jnp.log(jnp.asarray(config.orchestrator.step_size, dtype)),
        log_temperatures=jnp.zeros((num_kernels,), dtype),
    )


def meta_optimizer(config: PredictorConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam at ``meta_learning_rate``."""
    import optax  # on first trace (meta-learning is off by default)

    return optax.chain(
        optax.clip_by_global_norm(config.meta_gradient_clip), optax.adam(config.meta_learning_rate)
    )


def tempered(draws: jax.Array, means: jax.Array, temperatures: jax.Array) -> jax.Array:
    """Kernel draws ``(K, S)`` spread about their kernel's prediction ``(K,)`` by its temperature."""
    return means[:, None] + temperatures[:, None] * (draws - means[:, None])


def mixture_components(
    weights: jax.Array,
    means: jax.Array,
    spreads: jax.Array,
    kernel_draws: jax.Array,
    normal_draws: jax.Array,
    temperatures: jax.Array,
    config: PredictorConfig,
) -> tuple[jax.Array, jax.Array]:
    """The predictor's forecast of the next standardised increment as weighted components.

    The same transforms as the predictor's draws (``_standardised_draws``: temperatures, unit
    spread, the Gaussian share, drift), applied to each component rather than to draws already
    assigned to one.

    Returns:
        weights ``(K + 1,)`` on the simplex (the last the Gaussian share) and draws ``(K + 1, S)``.
    """
    clipped = jnp.clip(jnp.nan_to_num(means), -20.0, 20.0)
    total = jnp.sum(weights)
    mean = jnp.dot(weights, clipped) / total
    draws = tempered(kernel_draws, means, temperatures)
    if config.unit_spread:
        spread = jnp.nan_to_num(spreads) * temperatures
        variance = jnp.dot(weights, spread**2 + (clipped - mean) ** 2) / total
        draws = (draws - mean) / jnp.sqrt(jnp.maximum(variance, 1e-6)) + mean
    share = config.gaussian_share
    draws = jnp.concatenate([draws, (mean + normal_draws)[None, :]], axis=0)
    component_weights = jnp.concatenate([(1.0 - share) * weights / total, jnp.full((1,), share, weights.dtype)])
    draws = draws - (1.0 - config.drift) * mean
    return component_weights, jnp.clip(jnp.nan_to_num(draws), -50.0, 50.0)


def mixture_crps(weights: jax.Array, draws: jax.Array, observed: jax.Array, *, fair: bool = True) -> jax.Array:
    """CRPS of the mixture ``sum_k weights_k F_k`` with ``F_k`` the empirical law of ``draws[k]``.

    ``sum_k w_k E|X_k - y| - 1/2 sum_kl w_k w_l E|X_k - X_l|`` (Gneiting & Raftery 2007,
    eq. 21). With ``fair`` a component's own term averages its ``S (S - 1)`` pairs of distinct
    draws (Ferro 2014): unbiased for the CRPS of the laws the draws come from.

    Args:
        weights: ``(K,)`` component weights, summing to 1.
        draws: ``(K, S)`` draws of each component.
        observed: ``()`` the outcome.
    """
    count = draws.shape[1]
    to_outcome = jnp.mean(jnp.abs(draws - observed), axis=1)  # (K,)
    pairs = jnp.abs(draws[:, None, :, None] - draws[None, :, None, :])  # (K, K, S, S)
    between = jnp.sum(pairs, axis=(2, 3)) / count**2
    if fair and count > 1:
        within = jnp.sum(jnp.diagonal(pairs, axis1=0, axis2=1), axis=(0, 1)) / (count * (count - 1))
        between = between - jnp.diag(jnp.diagonal(between)) + jnp.diag(within)
    return jnp.dot(weights, to_outcome) - 0.5 * weights @ between @ weights


def one_step_crps(params: MetaParams, step: OneStep, config: PredictorConfig, emergency_kernel: int) -> jax.Array:
    """CRPS (standardised units) of the forecast ``step`` describes, made with ``params``."""
    out, _ = update_orchestrator(
        step.orchestrator,
        step.predictions,
        step.observed,
        alarm=jnp.zeros((), bool),
        emergency=step.robust,
        config=config.orchestrator,
        step_size=params.step_size,
        epsilon=params.epsilon,
    )
    stepped = jnp.where(step.stepped, out.weights, jax.lax.stop_gradient(step.weights))
    weights = mixing_weights(OrchestratorState(stepped, step.orchestrator.potentials), step.emergency,
                             emergency_kernel, step.suspended)
    components, draws = mixture_components(
        weights, step.means, step.spreads, step.kernel_draws, step.normal_draws, params.temperatures, config
    )
    return mixture_crps(components, draws, step.target)


def crps_and_gradient(
    params: MetaParams, step: OneStep, config: PredictorConfig, emergency_kernel: int
) -> tuple[jax.Array, MetaParams]:
    """:func:`one_step_crps` and its gradient in ``params``."""
    # ott broadcasts (K,) against (1, 1) in its implicit backward pass too, traced here rather
    # than inside the solver's own allowance; the project's strict rank promotion is relaxed for it.
    with jax.numpy_rank_promotion("allow"):
        return jax.value_and_grad(one_step_crps)(params, step, config, emergency_kernel)


def init_meta(params: MetaParams, optimizer: optax.GradientTransformation) -> MetaState:
    """A learner starting at ``params`` (no weight step remembered yet)."""
    count = params.log_temperatures.shape[0]
    dtype = params.log_temperatures.dtype
    return MetaState(
        params=params,
        opt_state=optimizer.init(params),
        previous_orchestrator=OrchestratorState(
            weights=jnp.full((count,), 1.0 / count, dtype), potentials=jnp.zeros((2, count), dtype)
        ),
        previous_predictions=jnp.zeros((count,), dtype),
        previous_robust=jnp.zeros((), bool),
        previous_stepped=jnp.zeros((), bool),
    )


def update_meta(
    state: MetaState,
    step: OneStep,
    config: PredictorConfig,
    optimizer: optax.GradientTransformation,
    emergency_kernel: int,
) -> tuple[MetaParams, MetaState, jax.Array]:
    """One online gradient step on the CRPS of the forecast ``step`` (none if not ``active``).

    Returns:
        the new parameters, the learner (its remembered weight step unchanged: see
        :func:`remember`), and the step's CRPS at the old parameters (NaN if not active).
    """
    import optax

    score, grads = crps_and_gradient(state.params, step, config, emergency_kernel)
    finite = jnp.isfinite(score) & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in grads]))
    use = step.active & finite
    grads = jax.tree_util.tree_map(lambda g: jnp.where(use, g, 0.0), grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(use, n, o), new, old)  # noqa: E731
    new_state = state._replace(params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state))
    return new_state.params, new_state, jnp.where(step.active, score, jnp.nan)


def remember(
    state: MetaState, orchestrator: OrchestratorState, predictions: jax.Array, robust: jax.Array, stepped: jax.Array
) -> MetaState:
    """The learner with the inputs of the weight step just taken: the next gradient goes through it."""
    return state._replace(
        previous_orchestrator=orchestrator,
        previous_predictions=predictions,
        previous_robust=jnp.asarray(robust, bool),
        previous_stepped=jnp.asarray(stepped, bool),
    )
