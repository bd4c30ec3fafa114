"""A chaotic control task: steer Lorenz-63 onto one of its unstable fixed points with a small forcing.

The plant is the registry's Lorenz (1963) vector field (:data:`chaosfm.data.SYSTEMS`
``["lorenz63"]``, sigma = 10, rho = 28, beta = 8/3) plus an additive forcing on every coordinate,

    x' = sigma (y - x) + u_0,   y' = x (rho - z) - y + u_1,   z' = x y - beta z + u_2,   |u_i| <= u_max,

integrated by the classical fixed-step Runge-Kutta method (RK4) at ``dt`` = 0.01; each decision
holds its forcing for ``hold_steps`` steps (0.1 time units by default, about a seventh of the
attractor's dominant period 0.76). The target is the fixed point

    C+- = (+-sqrt(beta (rho - 1)), +-sqrt(beta (rho - 1)), rho - 1)

(``target_sign`` picks it), a saddle-focus: a stable direction (eigenvalue about -13.85) and an
unstable spiral (about 0.094 +- 10.19 i), so an uncontrolled orbit near it spirals away, slowly.

An episode starts on the attractor (:func:`lorenz_control_reset`: a point drawn uniformly within the
registry's ``spread`` of its ``near_attractor`` centre, integrated uncontrolled for ``burn_in`` time
units) and lasts ``episode_steps`` decisions. The reward of a decision (:func:`lorenz_control_step`)
is minus the Euclidean distance of the state it reaches to the target, minus ``action_cost`` times
the mean of ``(u_i / u_max)^2``. An episode succeeds (:func:`lorenz_control_success`) when the
distance stays within ``tolerance`` over its last ``success_window`` decisions.

Everything is a pure function over a NamedTuple state, so an episode is a ``lax.scan`` and many are
a ``jax.vmap``. Shape letters: T decisions of an episode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm.data import SYSTEMS

__all__ = [
    "LorenzControlConfig",
    "LorenzControlState",
    "lorenz_control_dynamics",
    "lorenz_control_reset",
    "lorenz_control_reward",
    "lorenz_control_step",
    "lorenz_control_success",
    "lorenz_controlled_field",
    "lorenz_fixed_point",
    "rk4_step",
]

_LORENZ = SYSTEMS["lorenz63"]


@dataclass(frozen=True)
class LorenzControlConfig:
    """The plant, the forcing's bound, the episode and what counts as success."""

    sigma: float = _LORENZ.parameters["sigma"]  # Lorenz's Prandtl number, 10
    rho: float = _LORENZ.parameters["rho"]  # Lorenz's reduced Rayleigh number, 28 (chaotic above ~24.74)
    beta: float = _LORENZ.parameters["beta"]  # Lorenz's aspect factor, 8/3
    dt: float = 0.01  # RK4 step in time units; RK4's error at 0.01 is far below the forcing's effect
    hold_steps: int = 10  # RK4 steps a decision's forcing is held (zero-order hold of 0.1 time units)
    u_max: float = 2.0  # bound on |u_i| of each coordinate; chosen on tuning starts (bench/control_lorenz.py)
    target_sign: int = 1  # +1 steers to C+, -1 to C-
    episode_steps: int = 200  # decisions per episode: 20 time units at the defaults, ~26 dominant periods
    action_cost: float = 0.1  # weight of mean((u / u_max)^2) in the reward, in distance units
    tolerance: float = 1.0  # success radius around the target, in state units (the attractor spans ~40)
    success_window: int = 50  # the last decisions that must all end within tolerance (5 time units)
    burn_in: float = 20.0  # uncontrolled time before the first decision, so starts are on the attractor

    def __post_init__(self) -> None:
        problems = [f"{name}: must be > 0, got {getattr(self, name)}" for name in
                    ("sigma", "beta", "dt", "u_max", "tolerance") if not getattr(self, name) > 0]
        if not self.rho > 1:
            problems.append(f"rho: must be > 1 (else C+- do not exist), got {self.rho}")
        problems += [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                     ("hold_steps", "episode_steps", "success_window") if getattr(self, name) < 1]
        if self.success_window > self.episode_steps:
            problems.append(f"success_window: must be <= episode_steps ({self.episode_steps}), got "
                            f"{self.success_window}")
        if self.target_sign not in (1, -1):
            problems.append(f"target_sign: must be +1 or -1, got {self.target_sign}")
        if self.action_cost < 0:
            problems.append(f"action_cost: must be >= 0, got {self.action_cost}")
        if self.burn_in < 0:
            problems.append(f"burn_in: must be >= 0, got {self.burn_in}")
        if problems:
            raise ValueError("LorenzControlConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "LorenzControlConfig":
        return dataclasses.replace(self, **changes)


class LorenzControlState(NamedTuple):
    """Where an episode is.

    Attributes:
        position: ``(3,)`` the Lorenz state ``(x, y, z)``.
        step: ``()`` decisions taken so far.
    """

    position: Float[Array, " 3"]
    step: Int[Array, ""]


def lorenz_fixed_point(config: LorenzControlConfig) -> Float[Array, " 3"]:
    """The target ``C+-`` of ``config.target_sign``: ``(s sqrt(beta (rho - 1)), s sqrt(beta (rho - 1)),
    rho - 1)``."""
    arm = config.target_sign * math.sqrt(config.beta * (config.rho - 1.0))
    return jnp.asarray([arm, arm, config.rho - 1.0])


def lorenz_controlled_field(
    config: LorenzControlConfig, position: Float[Array, " 3"], forcing: Float[Array, " 3"]
) -> Float[Array, " 3"]:
    """The registry's Lorenz-63 vector field at ``position`` plus ``forcing`` (not clipped here)."""
    return _LORENZ.equations.field(0.0, position, config.sigma, config.rho, config.beta) + forcing


def rk4_step(
    field: Callable[[Float[Array, " state"]], Float[Array, " state"]], state: Float[Array, " state"], dt: float
) -> Float[Array, " state"]:
    """One step of the classical fourth-order Runge-Kutta method for the autonomous ``x' = field(x)``."""
    k1 = field(state)
    k2 = field(state + 0.5 * dt * k1)
    k3 = field(state + 0.5 * dt * k2)
    k4 = field(state + dt * k3)
    return state + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _integrate(config: LorenzControlConfig, position, forcing, steps: int):
    field = lambda x: lorenz_controlled_field(config, x, forcing)  # noqa: E731
    return jax.lax.fori_loop(0, steps, lambda _, x: rk4_step(field, x, config.dt), position)


def lorenz_control_dynamics(
    config: LorenzControlConfig, position: Float[Array, " 3"], action: Float[Array, " 3"]
) -> Float[Array, " 3"]:
    """One decision: ``hold_steps`` RK4 steps of the forced field, the forcing ``action`` clipped to
    ``[-u_max, u_max]`` on each coordinate and held."""
    return _integrate(config, position, jnp.clip(action, -config.u_max, config.u_max), config.hold_steps)


def lorenz_control_reward(
    config: LorenzControlConfig, position: Float[Array, " 3"], action: Float[Array, " 3"]
) -> Float[Array, ""]:
    """``-|position - target| - action_cost * mean((u / u_max)^2)``, ``u`` the clipped ``action``."""
    forcing = jnp.clip(action, -config.u_max, config.u_max) / config.u_max
    distance = jnp.linalg.norm(position - lorenz_fixed_point(config).astype(position.dtype))
    return -distance - config.action_cost * jnp.mean(forcing**2)


def lorenz_control_reset(config: LorenzControlConfig, *, key: PRNGKeyArray) -> LorenzControlState:
    """A start on the attractor: uniform within the registry's ``spread`` of its ``near_attractor``
    centre, then ``burn_in`` time units uncontrolled (chaos makes starts from distinct keys
    independent long before)."""
    params = dict(_LORENZ.parameters, sigma=config.sigma, rho=config.rho, beta=config.beta)
    centre = jnp.asarray(_LORENZ.near_attractor(params), jnp.result_type(float))
    start = centre + jax.random.uniform(key, (3,), centre.dtype, -_LORENZ.spread, _LORENZ.spread)
    position = _integrate(config, start, jnp.zeros(3, centre.dtype), round(config.burn_in / config.dt))
    return LorenzControlState(position=position, step=jnp.zeros((), jnp.int32))


def lorenz_control_step(
    config: LorenzControlConfig, state: LorenzControlState, action: Float[Array, " 3"]
) -> tuple[LorenzControlState, Float[Array, ""], Bool[Array, ""]]:
    """Apply ``action`` (clipped to the bound) for one decision.

    Returns:
        The next state, the reward (:func:`lorenz_control_reward` at the state reached) and whether
        the episode is over (``episode_steps`` decisions taken).
    """
    position = lorenz_control_dynamics(config, state.position, action)
    step = state.step + 1
    return (LorenzControlState(position=position, step=step), lorenz_control_reward(config, position, action),
            step >= config.episode_steps)


def lorenz_control_success(config: LorenzControlConfig, distances: Float[Array, "... T"]) -> Bool[Array, "..."]:
    """Whether every one of the last ``success_window`` distances (to the target, one per decision
    of an episode, in order) is within ``tolerance``.

    Raises:
        ValueError: fewer than ``success_window`` decisions.
    """
    if distances.shape[-1] < config.success_window:
        raise ValueError(f"distances: need at least success_window = {config.success_window} decisions, got "
                         f"{distances.shape[-1]}")
    return jnp.all(distances[..., -config.success_window:] <= config.tolerance, axis=-1)
