"""Vector fields of the built-in chaotic flows: ``field(t, state, *parameters) -> d state / dt``.

Each function is one system's equations as its paper writes them, with the paper's constants as
named parameters (their defaults live in the registry, :mod:`chaosfm.data._systems`); the
positional order of the parameters is the order of ``ChaoticSystem.parameters``. ``t`` is unused
(every flow here is autonomous) but kept, as diffrax calls ``field(t, y, args)``. Parameters are
float64 scalars, so one compilation serves every value.

Shape letters: ``state`` is the system's dimension (3 or 4 here; any size >= 4 for the ring).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

Vector = Float[Array, " state"]
Scalar = Float[Array, ""]


# ---- the two original flows ------------------------------------------------------------------


def lorenz63(t: Any, state: Vector, sigma: Scalar, rho: Scalar, beta: Scalar) -> Vector:
    """Lorenz (1963), J. Atmos. Sci. 20, 130-141, eq. (25)-(27)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def rossler(t: Any, state: Vector, a: Scalar, b: Scalar, c: Scalar) -> Vector:
    """Rössler (1976), Phys. Lett. A 57, 397-398, eq. (2)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-y - z, x + a * y, b + z * (x - c)])


def lorenz96(t: Any, state: Vector, forcing: Scalar) -> Vector:
    """Lorenz (1996), "Predictability: a problem partly solved", ECMWF seminar, eq. (1):
    ``x_i' = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` on a ring of any size >= 4."""
    ahead_one, behind_one, behind_two = (jnp.roll(state, k) for k in (-1, 1, 2))
    return (ahead_one - behind_two) * behind_one - state + forcing


# ---- named three-dimensional flows -------------------------------------------------------------


def chen(t: Any, state: Vector, a: Scalar, b: Scalar, c: Scalar) -> Vector:
    """Chen & Ueta (1999), Int. J. Bifurcation Chaos 9, 1465-1466, eq. (2)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([a * (y - x), (c - a) * x - x * z + c * y, x * y - b * z])


def chua(t: Any, state: Vector, alpha: Scalar, beta: Scalar, a: Scalar, b: Scalar) -> Vector:
    """Chua's circuit with its piecewise-linear diode (Chua, Komuro & Matsumoto 1986, IEEE Trans.
    Circuits Syst. 33, 1072-1118), in Sprott's (2003, Appendix A) dimensionless form:
    ``x' = alpha (y - x + b x + (a - b)(|x + 1| - |x - 1|) / 2)``."""
    x, y, z = state[0], state[1], state[2]
    diode = b * x + 0.5 * (a - b) * (jnp.abs(x + 1.0) - jnp.abs(x - 1.0))
    return jnp.stack([alpha * (y - x + diode), x - y + z, -beta * y])


def halvorsen(t: Any, state: Vector, a: Scalar) -> Vector:
    """Halvorsen's cyclically symmetric attractor, Sprott (2003), Appendix A."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([
        -a * x - 4.0 * y - 4.0 * z - y**2,
        -a * y - 4.0 * z - 4.0 * x - z**2,
        -a * z - 4.0 * x - 4.0 * y - x**2,
    ])


def rabinovich_fabrikant(t: Any, state: Vector, alpha: Scalar, gamma: Scalar) -> Vector:
    """Rabinovich & Fabrikant (1979), Sov. Phys. JETP 50, 311-317, eq. (8)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([
        y * (z - 1.0 + x**2) + gamma * x,
        x * (3.0 * z + 1.0 - x**2) + gamma * y,
        -2.0 * z * (alpha + x * y),
    ])


def diffusionless_lorenz(t: Any, state: Vector, r: Scalar) -> Vector:
    """The diffusionless Lorenz equations, van der Schrier & Maas (2000), Physica D 141, 19-36."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-y - x, -x * z, x * y + r])


def complex_butterfly(t: Any, state: Vector, a: Scalar) -> Vector:
    """Elwakil, Özoğuz & Kennedy (2002), IEEE Trans. Circuits Syst. I 49, 527-530."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([a * (y - x), -z * jnp.sign(x), jnp.abs(x) - 1.0])


def double_scroll(t: Any, state: Vector, a: Scalar) -> Vector:
    """The double-scroll jerk ``x''' + a (x'' + x' + x - sgn x) = 0`` (Elwakil & Kennedy 2001,
    IEEE Trans. Circuits Syst. I 48, 289-307; Sprott 2003, Appendix A)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y, z, -a * (z + y + x - jnp.sign(x))])


def windmi(t: Any, state: Vector, a: Scalar, b: Scalar) -> Vector:
    """The reduced WINDMI model of the solar-wind-driven magnetosphere, ``x''' + a x'' + x' =
    b - e^x`` (Horton, Weigel & Sprott 2001, Chaos 11, 725-730)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y, z, -a * z - y + b - jnp.exp(x)])


def simplest_quadratic_jerk(t: Any, state: Vector, a: Scalar) -> Vector:
    """The simplest dissipative chaotic flow ``x''' + a x'' - x'^2 + x = 0``, Sprott (1997),
    Phys. Lett. A 228, 271-274, eq. (1)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y, z, -a * z + y**2 - x])


# ---- Sprott (1994), "Some simple chaotic flows", Phys. Rev. E 50, R647, Table I ------------
# Each case's non-unit coefficients are its parameters, in order of appearance.


def sprott_b(t: Any, state: Vector) -> Vector:
    """Case B: ``x' = y z, y' = x - y, z' = 1 - x y``."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y * z, x - y, 1.0 - x * y])


def sprott_c(t: Any, state: Vector) -> Vector:
    """Case C: ``x' = y z, y' = x - y, z' = 1 - x^2``."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y * z, x - y, 1.0 - x**2])


def sprott_d(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case D: ``x' = -y, y' = x + z, z' = x z + a y^2`` (a = 3)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-y, x + z, x * z + a * y**2])


def sprott_e(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case E: ``x' = y z, y' = x^2 - y, z' = 1 - a x`` (a = 4)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y * z, x**2 - y, 1.0 - a * x])


def sprott_f(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case F: ``x' = y + z, y' = -x + a y, z' = x^2 - z`` (a = 0.5)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y + z, -x + a * y, x**2 - z])


def sprott_h(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case H: ``x' = -y + z^2, y' = x + a y, z' = x - z`` (a = 0.5)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-y + z**2, x + a * y, x - z])


def sprott_j(t: Any, state: Vector, a: Scalar, b: Scalar) -> Vector:
    """Case J: ``x' = a z, y' = -b y + z, z' = -x + y + y^2`` (a = b = 2)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([a * z, -b * y + z, -x + y + y**2])


def sprott_n(t: Any, state: Vector, a: Scalar, b: Scalar) -> Vector:
    """Case N: ``x' = -a y, y' = x + z^2, z' = 1 + y - b z`` (a = b = 2)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-a * y, x + z**2, 1.0 + y - b * z])


def sprott_o(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case O: ``x' = y, y' = x - z, z' = x + x z + a y`` (a = 2.7)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([y, x - z, x + x * z + a * y])


def sprott_r(t: Any, state: Vector, a: Scalar, b: Scalar) -> Vector:
    """Case R: ``x' = a - y, y' = b + z, z' = x y - z`` (a = 0.9, b = 0.4)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([a - y, b + z, x * y - z])


def sprott_s(t: Any, state: Vector, a: Scalar) -> Vector:
    """Case S: ``x' = -x - a y, y' = x + z^2, z' = 1 + x`` (a = 4)."""
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-x - a * y, x + z**2, 1.0 + x])


# ---- hyperchaos ----------------------------------------------------------------------------------


def rossler_hyperchaos(t: Any, state: Vector, a: Scalar, b: Scalar, c: Scalar, d: Scalar) -> Vector:
    """Rössler (1979), "An equation for hyperchaos", Phys. Lett. A 71, 155-157, eq. (1)."""
    x, y, z, w = state[0], state[1], state[2], state[3]
    return jnp.stack([-y - z, x + a * y + w, b + x * z, -c * z + d * w])
