"""A Kolmogorov–Arnold layer: a learnable univariate function on every edge.

A KAN layer (Liu et al. 2024, "KAN: Kolmogorov–Arnold Networks", §2.2 eq. 2.5 and §2.3 eq. 2.10)
maps ``x`` of ``I`` inputs to ``O`` outputs by summing one learnable function per edge:

    y_j = sum_i phi_ij(x_i),    phi_ij(x) = w_ij * silu(x) + sum_k c_ijk * b_k(x).

The SiLU term (the paper's "base function") keeps a gradient outside the grid; ``b_k`` is a basis
on a fixed grid of ``G + 1`` evenly spaced knots ``g_0 = -r, ..., g_G = r`` (step ``h = 2r / G``;
the grid never moves, only ``w`` and ``c`` are trained). Two bases:

* ``"bspline"``: the ``G + k`` B-splines of order ``k`` (degree ``k``) on the grid extended by
  ``k`` knots on each side, by the Cox–de Boor recursion
  ``B_{m,0}(x) = 1[t_m <= x < t_{m+1}]``,
  ``B_{m,p}(x) = (x - t_m) / (t_{m+p} - t_m) B_{m,p-1}(x) + (t_{m+p+1} - x) / (t_{m+p+1} - t_{m+1}) B_{m+1,p-1}(x)``
  (the paper's choice, order 3 by default);
* ``"rbf"``: the ``G + 1`` Gaussians ``b_k(x) = exp(-((x - g_k) / h)²)`` centred on the knots
  (FastKAN, Li 2024, "Kolmogorov-Arnold Networks are Radial Basis Function Networks", §2), which
  needs no recursion and approximates the cubic B-spline basis.

Everything is computed in float32. A layer reads one example; batch with ``jax.vmap``.

Dimension letters: I inputs, O outputs, K basis functions per edge.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm.models._base import init_rng, normal_init

__all__ = ["KAN_BASES", "KANLayer", "bspline_basis", "rbf_basis"]

_F32 = jnp.float32


def bspline_basis(
    x: Float[Array, " inputs"], grid_size: int, order: int, radius: float
) -> Float[Array, "inputs basis"]:
    """The ``grid_size + order`` B-splines of order ``order`` on ``[-radius, radius]`` at each input.

    The grid has ``grid_size`` intervals of width ``h = 2 radius / grid_size`` and is extended by
    ``order`` knots on each side, so every basis function is a full B-spline; together they sum to
    1 on ``[-radius, radius)`` and all vanish outside ``[-radius - order h, radius + order h)``.
    """
    x = x.astype(_F32)[:, None]  # (I, 1)
    step = 2.0 * radius / grid_size
    knots = -radius + step * jnp.arange(-order, grid_size + order + 1, dtype=_F32)[None, :]  # (1, G + 2k + 1)
    basis = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).astype(_F32)  # order 0: (I, G + 2k)
    for p in range(1, order + 1):
        left = (x - knots[:, : -(p + 1)]) / (knots[:, p:-1] - knots[:, : -(p + 1)]) * basis[:, :-1]
        right = (knots[:, p + 1 :] - x) / (knots[:, p + 1 :] - knots[:, 1:-p]) * basis[:, 1:]
        basis = left + right  # (I, G + 2k - p)
    return basis


def rbf_basis(
    x: Float[Array, " inputs"], grid_size: int, order: int, radius: float
) -> Float[Array, "inputs basis"]:
    """The ``grid_size + 1`` Gaussians ``exp(-((x - g_k) / h)²)`` centred on the knots of
    ``[-radius, radius]`` (``h`` the knot spacing); ``order`` does not apply."""
    del order
    x = x.astype(_F32)[:, None]  # (I, 1)
    step = 2.0 * radius / grid_size
    centres = -radius + step * jnp.arange(grid_size + 1, dtype=_F32)[None, :]  # (1, G + 1)
    return jnp.exp(-(((x - centres) / step) ** 2))


def _bspline_count(grid_size: int, order: int) -> int:
    return grid_size + order


def _rbf_count(grid_size: int, order: int) -> int:
    return grid_size + 1


KAN_BASES: dict[str, tuple[Callable[..., Array], Callable[[int, int], int]]] = {
    "bspline": (bspline_basis, _bspline_count),
    "rbf": (rbf_basis, _rbf_count),
}
"""Basis name -> (basis function, number of basis functions for ``(grid_size, order)``)."""


class KANLayer(eqx.Module):
    """``(I,) -> (O,)``: ``y_j = sum_i base_weight[i, j] silu(x_i) + sum_ik coef[i, j, k] b_k(x_i)``."""

    base_weight: Float[Array, "inputs outputs"]
    coef: Float[Array, "inputs outputs basis"]
    basis: str = eqx.field(static=True)
    grid_size: int = eqx.field(static=True)
    order: int = eqx.field(static=True)
    radius: float = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        basis: str = "bspline",
        grid_size: int = 5,
        order: int = 3,
        radius: float = 2.0,
        key: PRNGKeyArray | np.random.Generator,
    ):
        """Args:
            in_features, out_features: ``I`` and ``O``.
            basis: ``"bspline"`` or ``"rbf"`` (:data:`KAN_BASES`).
            grid_size: intervals ``G`` of the grid on ``[-radius, radius]`` (``G + 1`` knots).
            order: B-spline order ``k`` (``"bspline"`` only).
            radius: half-width of the grid; inputs are expected to be roughly standardised.
            key: initialisation key (or a NumPy generator from a parent module).
        """
        if basis not in KAN_BASES:
            raise ValueError(f"basis: unknown {basis!r}; known: {sorted(KAN_BASES)}")
        if grid_size < 1:
            raise ValueError(f"grid_size: must be >= 1, got {grid_size}")
        if order < 0:
            raise ValueError(f"order: must be >= 0, got {order}")
        if not radius > 0:
            raise ValueError(f"radius: must be > 0, got {radius}")
        rng = init_rng(key)
        count = KAN_BASES[basis][1](grid_size, order)
        # The base term starts as a plain SiLU layer; the spline terms start small (the paper's
        # noise initialisation), so a fresh layer is close to an MLP layer and learns its edges.
        self.base_weight = normal_init(rng, (in_features, out_features), in_features**-0.5)
        self.coef = normal_init(rng, (in_features, out_features, count), 0.1 * in_features**-0.5)
        self.basis, self.grid_size, self.order, self.radius = basis, grid_size, order, float(radius)

    def basis_values(self, x: Float[Array, " inputs"]) -> Float[Array, "inputs basis"]:
        """``b_k(x_i)`` for every input and basis function, float32."""
        return KAN_BASES[self.basis][0](x, self.grid_size, self.order, self.radius)

    def __call__(self, x: Float[Array, " inputs"]) -> Float[Array, " outputs"]:
        x32 = x.astype(_F32)
        spline = jnp.einsum("ik,iok->o", self.basis_values(x32), self.coef)
        return jax.nn.silu(x32) @ self.base_weight + spline
