"""Orchestrator: kernel weights moved by one JKO step per observation.

A JKO step (Jordan, Kinderlehrer & Otto 1998) minimises ``energy(w) + W_eps(w, w_t) / (2 tau)``.
It is split here in two, as in mirror-prox schemes for Wasserstein gradient flows (Peyré 2015,
sec. 3):

1. Mirror (entropic) step on the energy, the loss of the mixed prediction
   ``E(w) = loss(sum_i w_i p_i - y)`` with ``loss`` the MSE, or the Huber loss with
   ``delta = 1.35 sigma`` in robust mode: ``w~ = softmax(log w_t - tau grad E(w_t))``.
2. Entropic OT projection: an unbalanced Sinkhorn problem (``ott-jax``, log domain) from the
   current weights ``w_t`` (hard marginal) towards ``w~`` (soft marginal, KL weight ``rho``) on
   the ground cost ``C_ij = (p_i - p_j)^2``. Its second marginal is the new weight vector: mass
   moves freely between kernels that agree and reluctantly between kernels that disagree.

If Sinkhorn does not converge it is retried with doubled epsilon; if that fails too the weights
fall back to uniform and ``fallback`` is set (the predictor's ``sinkhorn_fallback`` flag). Every
output is on the simplex: non-finite inputs are neutralised and a final guard falls back to
uniform (also ``fallback``).

Circuit breaker: ``emergency`` (Hölder below threshold) puts all weight on kernel D for the
prediction and switches the loss to Huber; ``alarm`` (CUSUM) resets the weights to uniform.
A suspended kernel (the DGM after a mode collapse) gets weight 0 in the prediction, the others
renormalised; its learnt weight is kept for when it returns.
Predictions and targets are in standardised units (increments divided by their EMA scale), so
``sigma = 1`` and ``tau`` is scale-free. Dimension letter: K kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import OrchestratorConfig

HUBER_DELTA = 1.35  # in sigmas: 95% efficiency under Gaussian errors (Huber 1964)
_GRADIENT_CLIP = 50.0


class OrchestratorState(NamedTuple):
    weights: jax.Array  # (K,) on the simplex
    potentials: jax.Array  # (2, K) Sinkhorn duals (f, g) of the last converged step: warm start


class OrchestratorOutput(NamedTuple):
    weights: jax.Array  # (K,) after the step (before the emergency override)
    proposal: jax.Array  # (K,) mirror-step proposal
    free_energy: jax.Array  # entropy of the weights, nats
    sinkhorn_iterations: jax.Array  # int32, summed over attempts
    sinkhorn_converged: jax.Array  # bool, some attempt converged
    fallback: jax.Array  # bool, Sinkhorn failed and the weights fell back to uniform


def init_orchestrator(num_kernels: int, dtype=jnp.float32) -> OrchestratorState:
    """Uniform weights; zero potentials (ott's own cold start)."""
    return OrchestratorState(
        weights=jnp.full((num_kernels,), 1.0 / num_kernels, dtype),
        potentials=jnp.zeros((2, num_kernels), dtype),
    )


def mixing_weights(
    state: OrchestratorState,
    emergency: jax.Array,
    emergency_kernel: int,
    suspended: jax.Array | None = None,
) -> jax.Array:
    """Weights used for the next prediction: one-hot on kernel D in an emergency.

    ``suspended`` ``(K,)`` bool: those kernels get weight 0 and the others are renormalised
    (uniform over the others if they held no weight). The emergency kernel is never suspended.
    """
    count = state.weights.shape[0]
    one_hot = jax.nn.one_hot(emergency_kernel, count, dtype=state.weights.dtype)
    weights = state.weights
    if suspended is not None:
        active = ~suspended
        kept = jnp.where(active, weights, 0.0)
        total = jnp.sum(kept)
        spread = active.astype(weights.dtype) / jnp.maximum(jnp.sum(active), 1)
        weights = jnp.where(total > 0, kept / jnp.where(total > 0, total, 1.0), spread)
    return jnp.where(emergency, one_hot, weights)


def energy_gradient(
    weights: jax.Array, predictions: jax.Array, observed: jax.Array, robust: jax.Array
) -> jax.Array:
    """Gradient of the mixed loss in ``w``: ``loss'(w . p - y) p`` (MSE or Huber)."""
    residual = jnp.dot(weights, predictions) - observed
    derivative = jnp.where(robust, jnp.clip(residual, -HUBER_DELTA, HUBER_DELTA), residual)
    return derivative * predictions


def entropy(weights: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(weights > 0, weights * jnp.log(jnp.maximum(weights, 1e-30)), 0.0))


def _sinkhorn(
    source: jax.Array,
    target: jax.Array,
    cost: jax.Array,
    epsilon: float,
    config: OrchestratorConfig,
    init: jax.Array | None = None,
    momentum: float = 1.0,
    learned_epsilon: jax.Array | None = None,
):
    """One log-domain Sinkhorn solve; ``init`` ``(2, K)`` warm-starts the dual potentials.

    ``momentum`` > 1 over-relaxes the updates (ott ``Momentum``): the same fixed point in fewer
    iterations. ``learned_epsilon`` (a traced scalar, ``_meta.py``) replaces the geometry's
    epsilon; the unbalanced marginal's ``tau`` stays that of ``epsilon``, since ott reads it at
    trace time, so the learned epsilon moves ``rho = eps tau / (1 - tau)`` with it. ott's
    implicit differentiation (its default) then gives the gradient of the marginal in it.

    Returns:
        the second marginal ``(K,)``, converged, iterations, and the potentials ``(2, K)``.
    """
    # Imported when traced: ott-jax takes ~1.2 s to import, and a restart that loads the step's
    # export (_export.py) never traces it.
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import acceleration, sinkhorn

    # epsilon is a Python float: ott decides balanced vs unbalanced from tau_b at trace time.
    epsilon = float(epsilon)
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon if learned_epsilon is None else learned_epsilon)
    tau_target = config.marginal_relaxation / (config.marginal_relaxation + epsilon)
    problem = linear_problem.LinearProblem(geom, source, target, tau_a=1.0, tau_b=tau_target)
    solver = sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=config.sinkhorn_threshold,
        max_iterations=config.sinkhorn_max_iterations,
        inner_iterations=min(config.sinkhorn_inner_iterations, config.sinkhorn_max_iterations),
        min_iterations=0,
        momentum=None if momentum == 1.0 else acceleration.Momentum(value=momentum),
    )
    # ott broadcasts (K,) against (1, 1) internally; the project's strict rank promotion is
    # relaxed for the solver only.
    with jax.numpy_rank_promotion("allow"):
        out = solver(problem, init=None if init is None else (init[0], init[1]))
    marginal = jnp.sum(out.matrix, axis=0)
    potentials = jnp.stack([out.f, out.g])
    ok = out.converged & jnp.all(jnp.isfinite(marginal)) & (jnp.sum(marginal) > 0)
    ok = ok & jnp.all(jnp.isfinite(potentials))
    return marginal, ok, jnp.asarray(out.n_iters, jnp.int32), potentials


def project(
    weights: jax.Array,
    proposal: jax.Array,
    predictions: jax.Array,
    config: OrchestratorConfig,
    potentials: jax.Array | None = None,
    learned_epsilon: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Entropic OT projection with retry and fallback.

    ``learned_epsilon``: a traced epsilon replacing ``config.epsilon`` (see :func:`_sinkhorn`).

    ``potentials`` ``(2, K)`` warm-start the first attempt (the previous step's duals: weights
    and costs move little between steps), which is also over-relaxed by
    ``config.sinkhorn_momentum``; the doubled-epsilon retry is plain Sinkhorn from a cold start,
    the conservative fallback.

    Returns:
        new weights, converged, Sinkhorn iterations, fallback, and the potentials to warm-start
        the next step with (zeros after a fallback).
    """
    count = weights.shape[0]
    cost = (predictions[:, None] - predictions[None, :]) ** 2
    # Cost in units of its largest entry (plus one sigma^2): epsilon keeps one meaning.
    cost = cost / (1.0 + jnp.max(cost))
    epsilon = config.epsilon
    first, ok_first, iterations_first, duals_first = _sinkhorn(
        weights, proposal, cost, epsilon, config, potentials, config.sinkhorn_momentum, learned_epsilon
    )

    def retry(_):
        second, ok_second, iterations_second, _ = _sinkhorn(
            weights, proposal, cost, 2.0 * epsilon, config,
            learned_epsilon=None if learned_epsilon is None else 2.0 * learned_epsilon,
        )
        # Duals at 2 epsilon are no warm start at epsilon: the next step starts cold.
        return second, ok_second, iterations_first + iterations_second, jnp.zeros_like(duals_first)

    marginal, converged, iterations, duals = jax.lax.cond(
        ok_first, lambda _: (first, ok_first, iterations_first, duals_first), retry, None
    )
    uniform = jnp.full((count,), 1.0 / count, weights.dtype)
    new = jnp.where(converged, marginal / jnp.sum(marginal), uniform)
    duals = jnp.where(converged, duals, 0.0)
    return new, converged, iterations, ~converged, duals


def update_orchestrator(
    state: OrchestratorState,
    predictions: jax.Array,
    observed: jax.Array,
    *,
    alarm: jax.Array,
    emergency: jax.Array,
    config: OrchestratorConfig,
    step_size: jax.Array | None = None,
    epsilon: jax.Array | None = None,
) -> tuple[OrchestratorOutput, OrchestratorState]:
    """One weight step after observing ``observed`` given the kernels' ``(K,)`` predictions of it.

    ``step_size`` and ``epsilon``, when given (traced scalars learned online, ``_meta.py``),
    replace ``config.step_size`` and ``config.epsilon``; the step is differentiable in both.
    """
    count = state.weights.shape[0]
    dtype = state.weights.dtype
    uniform = jnp.full((count,), 1.0 / count, dtype)
    finite = jnp.isfinite(predictions) & jnp.isfinite(observed)
    predictions = jnp.where(finite, predictions, 0.0)
    observed = jnp.where(jnp.isfinite(observed), observed, 0.0)
    robust = jnp.asarray(config.robust) | emergency

    gradient = energy_gradient(state.weights, predictions, observed, robust)
    gradient = jnp.clip(jnp.nan_to_num(gradient), -_GRADIENT_CLIP, _GRADIENT_CLIP)
    log_weights = jnp.log(jnp.maximum(state.weights, 1e-30))
    tau = config.step_size if step_size is None else step_size
    proposal = jax.nn.softmax(log_weights - tau * gradient)

    bounded = jnp.clip(predictions, -1e3, 1e3)  # the cost only needs the ordering of scales
    new, converged, iterations, fallback, potentials = project(
        state.weights, proposal, bounded, config, state.potentials, epsilon
    )
    new = (1.0 - config.weight_floor) * new + config.weight_floor * uniform
    new = jnp.where(alarm, uniform, new)
    on_simplex = jnp.all(jnp.isfinite(new)) & jnp.all(new >= 0) & (jnp.abs(jnp.sum(new) - 1.0) < 1e-3)
    fallback = fallback | ~on_simplex
    new = jnp.where(on_simplex, new / jnp.sum(new), uniform)

    out = OrchestratorOutput(
        weights=new,
        proposal=proposal,
        free_energy=entropy(new),
        sinkhorn_iterations=iterations,
        sinkhorn_converged=converged,
        fallback=fallback,
    )
    return out, OrchestratorState(weights=new, potentials=potentials)
