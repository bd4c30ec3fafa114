"""Equations of the built-in iterated maps, ``step(state, *parameters) -> next state``, and the
Mackey–Glass delay equation's right-hand side.

As in :mod:`chaosfm.data._flows`: one system per function, the paper's constants as named
float64 parameters in the order of ``ChaoticSystem.parameters``, defaults in the registry.

Shape letters: ``state`` is the map's dimension (1 or 2).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

Vector = Float[Array, " state"]
Scalar = Float[Array, ""]


def henon(state: Vector, a: Scalar, b: Scalar) -> Vector:
    """Hénon (1976), Commun. Math. Phys. 50, 69-77, eq. (2)."""
    x, y = state[0], state[1]
    return jnp.stack([1.0 - a * x**2 + y, b * x])


def logistic(state: Vector, r: Scalar) -> Vector:
    """The logistic map ``x' = r x (1 - x)``, May (1976), Nature 261, 459-467."""
    x = state[0]
    return jnp.stack([r * x * (1.0 - x)])


def tent(state: Vector, mu: Scalar) -> Vector:
    """The tent map ``x' = mu min(x, 1 - x)`` (Sprott 2003, Appendix A)."""
    x = state[0]
    return jnp.stack([mu * jnp.minimum(x, 1.0 - x)])


def sine(state: Vector, a: Scalar) -> Vector:
    """The sine map ``x' = a sin(pi x)`` (Sprott 2003, Appendix A)."""
    return jnp.stack([a * jnp.sin(jnp.pi * state[0])])


def ricker(state: Vector, a: Scalar) -> Vector:
    """Ricker's population model ``x' = a x e^{-x}``, Ricker (1954), J. Fish. Res. Board Can.
    11, 559-623."""
    x = state[0]
    return jnp.stack([a * x * jnp.exp(-x)])


def lozi(state: Vector, a: Scalar, b: Scalar) -> Vector:
    """Lozi (1978), J. Phys. Colloques 39, C5-9: the Hénon map with ``|x|`` for ``x^2``."""
    x, y = state[0], state[1]
    return jnp.stack([1.0 - a * jnp.abs(x) + y, b * x])


def delayed_logistic(state: Vector, a: Scalar) -> Vector:
    """The delayed logistic map ``x' = a x (1 - y), y' = x`` (Maynard Smith 1968, Mathematical
    Ideas in Biology; Aronson, Chory, Hall & McGehee 1982, Commun. Math. Phys. 83, 303-354)."""
    x, y = state[0], state[1]
    return jnp.stack([a * x * (1.0 - y), x])


def holmes_cubic(state: Vector, b: Scalar, d: Scalar) -> Vector:
    """Holmes' cubic ("Duffing") map ``x' = y, y' = -b x + d y - y^3``, Holmes (1979), Phil.
    Trans. R. Soc. A 292, 419-448."""
    x, y = state[0], state[1]
    return jnp.stack([y, -b * x + d * y - y**3])


def tinkerbell(state: Vector, a: Scalar, b: Scalar, c: Scalar, d: Scalar) -> Vector:
    """The Tinkerbell map ``x' = x^2 - y^2 + a x + b y, y' = 2 x y + c x + d y`` (Nusse & Yorke
    1994, Dynamics: Numerical Explorations; Sprott 2003, Appendix A)."""
    x, y = state[0], state[1]
    return jnp.stack([x**2 - y**2 + a * x + b * y, 2.0 * x * y + c * x + d * y])


def ikeda(state: Vector, a: Scalar, b: Scalar, c: Scalar, d: Scalar) -> Vector:
    """The Ikeda map of a ring laser cavity (Ikeda 1979, Opt. Commun. 30, 257-261; Hammel, Jones
    & Moloney 1985, J. Opt. Soc. Am. B 2, 552-564) in Sprott's (2003) form: with
    ``phase = a - b / (1 + x^2 + y^2)``, ``x + i y -> c + d e^{i phase} (x + i y)``."""
    x, y = state[0], state[1]
    phase = a - b / (1.0 + x**2 + y**2)
    cos, sin = jnp.cos(phase), jnp.sin(phase)
    return jnp.stack([c + d * (x * cos - y * sin), d * (x * sin + y * cos)])


def arnold_cat(state: Vector) -> Vector:
    """Arnold's cat map ``(x, y) -> (x + y, x + 2 y) mod 1`` (Arnold & Avez 1968, Ergodic
    Problems of Classical Mechanics, §1.16); its Jacobian is constant, ``[[1, 1], [1, 2]]``."""
    x, y = state[0], state[1]
    return jnp.stack([jnp.mod(x + y, 1.0), jnp.mod(x + 2.0 * y, 1.0)])


def mackey_glass_rate(x: Scalar, delayed: Scalar, beta: Scalar, gamma: Scalar, n: Scalar) -> Scalar:
    """Mackey & Glass (1977), Science 197, 287-289, eq. (4b): ``x'(t) = beta x(t - tau) /
    (1 + x(t - tau)^n) - gamma x(t)``; ``delayed`` is ``x(t - tau)``."""
    return beta * delayed / (1.0 + delayed**n) - gamma * x
