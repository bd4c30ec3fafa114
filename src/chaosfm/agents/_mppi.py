"""Model-predictive path integral (MPPI) planning, as TD-MPC2 plans (Hansen, Su & Wang 2024,
"TD-MPC2: Scalable, Robust World Models for Continuous Control", ICLR, Sec. 3 and Appendix
"Planning"; the update is Williams et al. 2017's MPPI with the elite selection of CEM).

The planner knows nothing of what it plans in: ``dynamics(latent, action) -> latent``,
``reward(latent, action) -> scalar`` and ``value(latent) -> scalar`` are any JAX functions (the
exact equations of a system, or a learned world model), and ``latent`` any array. A candidate
action sequence ``a_0 .. a_{H-1}`` from ``z_0`` is scored by its discounted return under the model

    G = sum_{t < H} discount^t reward(z_t, a_t) + discount^H value(z_H),   z_{t+1} = dynamics(z_t, a_t).

Each iteration samples ``num_samples`` sequences, ``clip(mean + std * eps)`` with ``eps ~ N(0, 1)``
(and, if a policy prior is given, ``num_policy_samples`` of them are the prior's own rollouts
through the model, kept fixed over the iterations, as TD-MPC2 mixes them), keeps the
``num_elites`` best, weighs them by ``softmax((G - max G) / temperature)`` and sets the mean and
standard deviation to the weighted mean and standard deviation of the elites (the deviation
clipped to ``[min_std, max_std]``). After the last iteration the first action of the mean is the
decision, and the mean shifted by one step is the next decision's warm start.

:func:`random_shooting_plan` is the baseline with no iteration: the best of ``num_samples``
uniform random sequences. Both are one jitted function each (``equinox.filter_jit``: functions
are static, the arrays of an ``equinox.Module`` passed as ``dynamics`` are traced), loop over
iterations with ``lax.fori_loop`` and over the horizon with ``lax.scan``, vmap over samples, and
batch over many starting states with ``jax.vmap``.

Dimension letters: H planning horizon (decisions), A action dimension, N samples, E elites,
``...`` the latent's own shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["MPPIConfig", "MPPIResult", "mppi_plan", "random_shooting_plan", "rollout_return"]

Dynamics = Callable[[Any, Array], Any]
Reward = Callable[[Any, Array], Array]
Value = Callable[[Any], Array]


@dataclass(frozen=True)
class MPPIConfig:
    """Search budget and update rule of :func:`mppi_plan` (also :func:`random_shooting_plan`).

    A decision costs ``iterations * num_samples * horizon`` calls of ``dynamics`` (plus
    ``horizon`` for the returned ``planned_return``, and ``num_policy_samples * horizon`` once for
    the prior's rollouts).
    """

    action_dim: int  # A, the width of one action
    horizon: int = 10  # H decisions looked ahead; the terminal value stands in for what lies beyond
    num_samples: int = 256  # N sequences scored per iteration, prior rollouts included
    num_elites: int = 32  # E best sequences the mean and deviation are refitted to (TD-MPC2: 64 of 512)
    iterations: int = 6  # refits of the sampling distribution per decision (TD-MPC2: 6)
    temperature: float = 0.5  # return units: elites within ~this of the best share the weight; TD-MPC2's x0.5 is 2 here
    min_std: float = 0.05  # floor of the deviation, so the search never collapses onto one sequence
    max_std: float = 2.0  # the deviation at the start of every decision, in action units
    action_low: float = -1.0  # lower bound of every action coordinate; samples are clipped to it
    action_high: float = 1.0  # upper bound of every action coordinate
    discount: float = 0.99  # per-decision discount of rewards and of the terminal value
    num_policy_samples: int = 0  # of the N sequences, how many are a policy prior's rollouts (TD-MPC2: 24)

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                    ("action_dim", "horizon", "num_samples", "num_elites", "iterations")
                    if getattr(self, name) < 1]
        if self.num_elites > self.num_samples:
            problems.append(f"num_elites: must be <= num_samples ({self.num_samples}), got {self.num_elites}")
        if not self.temperature > 0:
            problems.append(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.min_std <= self.max_std:
            problems.append(f"min_std, max_std: must satisfy 0 < min_std <= max_std, got {self.min_std}, "
                            f"{self.max_std}")
        if not self.action_low < self.action_high:
            problems.append(f"action_low, action_high: must satisfy action_low < action_high, got "
                            f"{self.action_low}, {self.action_high}")
        if not 0 < self.discount <= 1:
            problems.append(f"discount: must lie in (0, 1], got {self.discount}")
        if not 0 <= self.num_policy_samples < self.num_samples:
            problems.append(f"num_policy_samples: must lie in [0, num_samples = {self.num_samples}), got "
                            f"{self.num_policy_samples}")
        if problems:
            raise ValueError("MPPIConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "MPPIConfig":
        return dataclasses.replace(self, **changes)


class MPPIResult(NamedTuple):
    """One decision of a planner.

    Attributes:
        action: ``(A,)`` the action to take now: the first action of ``mean``.
        next_mean: ``(H, A)`` ``mean`` shifted one step, its last step at the centre of the
            bounds: the warm start of the next decision.
        mean: ``(H, A)`` the final mean of the sampling distribution (random shooting: the best
            sequence).
        std: ``(H, A)`` the final standard deviation (random shooting: the half-width of the
            bounds, its sampling range).
        planned_return: ``()`` the discounted return of ``mean`` under the model.
    """

    action: Float[Array, " A"]
    next_mean: Float[Array, "H A"]
    mean: Float[Array, "H A"]
    std: Float[Array, "H A"]
    planned_return: Float[Array, ""]


def rollout_return(
    dynamics: Dynamics, reward: Reward, value: Value, latent: Any, actions: Float[Array, "H A"], discount: float
) -> Float[Array, ""]:
    """The discounted return ``sum_t discount^t reward(z_t, a_t) + discount^H value(z_H)`` of one
    action sequence from ``latent`` under the model (``lax.scan`` over the horizon)."""

    def advance(carry, action):
        z, scale, total = carry
        total = total + scale * reward(z, action)
        return (dynamics(z, action), scale * discount, total), None

    zero = jnp.zeros((), actions.dtype)
    (terminal, scale, total), _ = jax.lax.scan(advance, (latent, jnp.ones((), actions.dtype), zero), actions)
    return total + scale * value(terminal)


def _centre(config: MPPIConfig) -> float:
    return 0.5 * (config.action_low + config.action_high)


def _result(config, dynamics, reward, value, latent, mean, std) -> MPPIResult:
    shifted = jnp.concatenate([mean[1:], jnp.full_like(mean[:1], _centre(config))], axis=0)
    planned = rollout_return(dynamics, reward, value, latent, mean, config.discount)
    return MPPIResult(action=mean[0], next_mean=shifted, mean=mean, std=std, planned_return=planned)


def _policy_rollouts(config, dynamics, policy, latent, key) -> Float[Array, "P H A"]:
    def one(trajectory_key):
        def advance(z, step_key):
            action = jnp.clip(policy(z, key=step_key), config.action_low, config.action_high)
            return dynamics(z, action), action

        _, actions = jax.lax.scan(advance, latent, jax.random.split(trajectory_key, config.horizon))
        return actions

    return jax.vmap(one)(jax.random.split(key, config.num_policy_samples))


@eqx.filter_jit
def mppi_plan(
    config: MPPIConfig,
    dynamics: Dynamics,
    reward: Reward,
    value: Value,
    latent: Any,
    mean: Float[Array, "H A"] | None = None,
    policy: Callable[..., Float[Array, " A"]] | None = None,
    *,
    key: PRNGKeyArray,
) -> MPPIResult:
    """Plan one decision from ``latent`` by MPPI (the update is in the module docstring).

    Args:
        config: the search budget and update rule.
        dynamics: ``dynamics(latent, action) -> latent``, one decision of the model.
        reward: ``reward(latent, action) -> ()``, the reward of taking ``action`` in ``latent``.
        value: ``value(latent) -> ()``, the terminal value after ``horizon`` decisions.
        latent: the state planned from (any array, or pytree of arrays).
        mean: ``(H, A)`` the initial mean (a previous decision's ``next_mean``); ``None`` starts
            at the centre of the bounds.
        policy: ``policy(latent, *, key) -> (A,)``, a prior whose ``num_policy_samples`` rollouts
            through ``dynamics`` join the candidates; required iff ``num_policy_samples > 0``.
        key: randomness of the samples.

    Returns:
        The decision, the warm start of the next one, the final distribution and the planned
        return of its mean.

    Raises:
        ValueError: ``mean`` has the wrong shape, or ``policy`` and ``num_policy_samples``
            disagree.
    """
    shape = (config.horizon, config.action_dim)
    if mean is None:
        mean = jnp.full(shape, _centre(config))
    if jnp.shape(mean) != shape:
        raise ValueError(f"mean: must have shape (horizon, action_dim) = {shape}, got {jnp.shape(mean)}")
    if (policy is None) != (config.num_policy_samples == 0):
        raise ValueError(f"policy: must be given iff num_policy_samples > 0, got policy={policy!r} and "
                         f"num_policy_samples={config.num_policy_samples}")
    mean = jnp.clip(jnp.asarray(mean, jnp.result_type(float)), config.action_low, config.action_high)
    std = jnp.full(shape, config.max_std, mean.dtype)
    prior_key, search_key = jax.random.split(key)
    n_gaussian = config.num_samples - config.num_policy_samples
    prior = (_policy_rollouts(config, dynamics, policy, latent, prior_key) if policy is not None
             else jnp.zeros((0, *shape), mean.dtype))
    score = jax.vmap(lambda actions: rollout_return(dynamics, reward, value, latent, actions, config.discount))

    def iteration(i, carry):
        mean, std = carry
        noise = jax.random.normal(jax.random.fold_in(search_key, i), (n_gaussian, *shape), mean.dtype)
        candidates = jnp.concatenate(
            [prior, jnp.clip(mean[None] + std[None] * noise, config.action_low, config.action_high)], axis=0
        )  # (N, H, A)
        returns = score(candidates)
        returns = jnp.where(jnp.isnan(returns), -jnp.inf, returns)  # a diverged rollout is never an elite
        elite_returns, elite_index = jax.lax.top_k(returns, config.num_elites)
        elites = candidates[elite_index]  # (E, H, A)
        weights = jax.nn.softmax((elite_returns - elite_returns[0]) / config.temperature)
        new_mean = jnp.einsum("e,eha->ha", weights, elites)
        spread = jnp.sqrt(jnp.einsum("e,eha->ha", weights, (elites - new_mean[None]) ** 2))
        return new_mean, jnp.clip(spread, config.min_std, config.max_std)

    mean, std = jax.lax.fori_loop(0, config.iterations, iteration, (mean, std))
    return _result(config, dynamics, reward, value, latent, mean, std)


@eqx.filter_jit
def random_shooting_plan(
    config: MPPIConfig, dynamics: Dynamics, reward: Reward, value: Value, latent: Any, *, key: PRNGKeyArray
) -> MPPIResult:
    """The best of ``num_samples`` sequences drawn uniformly within the bounds, no iteration.

    Only ``horizon``, ``num_samples``, ``action_dim``, the bounds and ``discount`` of ``config``
    are read: give it ``num_samples = iterations * num_samples`` of an MPPI config for the same
    budget of model calls.
    """
    shape = (config.num_samples, config.horizon, config.action_dim)
    candidates = jax.random.uniform(key, shape, minval=config.action_low, maxval=config.action_high)
    returns = jax.vmap(lambda actions: rollout_return(dynamics, reward, value, latent, actions, config.discount))(
        candidates
    )
    best = candidates[jnp.argmax(jnp.where(jnp.isnan(returns), -jnp.inf, returns))]
    half_width = jnp.full(shape[1:], 0.5 * (config.action_high - config.action_low), best.dtype)
    return _result(config, dynamics, reward, value, latent, best, half_width)
