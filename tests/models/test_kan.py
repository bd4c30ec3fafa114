"""The Kolmogorov–Arnold layer: hand-computed small cases for both bases, the cubic B-splines against
their closed form, and what a layer does as a module (vmap, float32, gradients, bad arguments)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import KANLayer, bspline_basis, rbf_basis


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _layer(basis, order, base_weight, coef, radius=1.0):
    """A 2-input, 1-output layer on the 3-knot grid {-radius, 0, radius} with weights set by hand."""
    layer = KANLayer(2, 1, basis=basis, grid_size=2, order=order, radius=radius, key=jax.random.key(0))
    layer = eqx.tree_at(lambda m: m.base_weight, layer, jnp.asarray(base_weight, jnp.float32))
    return eqx.tree_at(lambda m: m.coef, layer, jnp.asarray(coef, jnp.float32))


def test_rbf_edges_by_hand():
    # Centres -1, 0, 1 and width h = 1: b_k(x) = exp(-(x - g_k)^2).
    base = [[0.3], [-0.2]]
    coef = [[[1.0, 2.0, 3.0]], [[-1.0, 0.5, 0.0]]]
    layer = _layer("rbf", 3, base, coef)
    x = np.array([0.5, -1.0])
    b0 = np.exp(-np.array([1.5, 0.5, -0.5]) ** 2)  # input 0 at 0.5
    b1 = np.exp(-np.array([0.0, -1.0, -2.0]) ** 2)  # input 1 at -1
    want = 0.3 * _silu(0.5) - 0.2 * _silu(-1.0) + (1 * b0[0] + 2 * b0[1] + 3 * b0[2]) + (-1 * b1[0] + 0.5 * b1[1])
    got = layer(jnp.asarray(x, jnp.float32))
    assert got.shape == (1,) and got.dtype == jnp.float32
    assert float(got[0]) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(np.asarray(rbf_basis(jnp.asarray(x), 2, 3, 1.0)), np.stack([b0, b1]), rtol=1e-6)


def test_order_one_bsplines_are_hat_functions_by_hand():
    # Order 1 on knots {-1, 0, 1} extended to {-2, -1, 0, 1, 2}: three hats peaking at -1, 0, 1.
    # At 0.5 the hats read (0, 0.5, 0.5); at -1 they read (1, 0, 0).
    base = [[0.3], [-0.2]]
    coef = [[[1.0, 2.0, 3.0]], [[-1.0, 0.5, 0.0]]]
    layer = _layer("bspline", 1, base, coef)
    basis = np.asarray(bspline_basis(jnp.asarray([0.5, -1.0]), 2, 1, 1.0))
    np.testing.assert_allclose(basis, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], atol=1e-7)
    want = 0.3 * _silu(0.5) - 0.2 * _silu(-1.0) + (2 * 0.5 + 3 * 0.5) + (-1 * 1.0)
    assert float(layer(jnp.asarray([0.5, -1.0]))[0]) == pytest.approx(want, rel=1e-6)


def _cardinal_cubic(u):
    """The uniform cubic B-spline on [0, 4) in closed form (piecewise cubic, zero outside)."""
    return np.select(
        [(u >= 0) & (u < 1), (u >= 1) & (u < 2), (u >= 2) & (u < 3), (u >= 3) & (u < 4)],
        [
            u**3 / 6,
            (-3 * u**3 + 12 * u**2 - 12 * u + 4) / 6,
            (3 * u**3 - 24 * u**2 + 60 * u - 44) / 6,
            (4 - u) ** 3 / 6,
        ],
        0.0,
    )


def test_cubic_bsplines_match_the_closed_form():
    grid_size, order, radius = 4, 3, 2.0
    h = 2 * radius / grid_size
    x = np.linspace(-4.2, 4.2, 97)
    got = np.asarray(bspline_basis(jnp.asarray(x, jnp.float32), grid_size, order, radius))
    assert got.shape == (97, grid_size + order)
    first_knots = -radius + h * (np.arange(grid_size + order) - order)  # where each B-spline starts
    want = _cardinal_cubic((x[:, None] - first_knots[None, :]) / h)
    np.testing.assert_allclose(got, want, atol=2e-6)
    inside = (x >= -radius) & (x < radius)
    np.testing.assert_allclose(got[inside].sum(axis=1), 1.0, atol=2e-6)  # a partition of unity on the grid
    assert got[np.abs(x) > radius + order * h].sum() == 0.0


def test_layer_as_a_module(key):
    layer = KANLayer(5, 3, grid_size=4, key=key)
    xs = jax.random.normal(jax.random.key(1), (7, 5))
    batched = jax.vmap(layer)(xs)
    np.testing.assert_allclose(np.asarray(batched[2]), np.asarray(layer(xs[2])), rtol=1e-6)
    assert layer(xs[0].astype(jnp.bfloat16)).dtype == jnp.float32
    # Every coefficient near the data and every base weight get a gradient.
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(xs) ** 2)))(layer)
    assert np.all(np.asarray(grads.base_weight) != 0)
    assert np.count_nonzero(np.asarray(grads.coef)) > 0.5 * grads.coef.size
    # The same key gives the same layer.
    np.testing.assert_array_equal(np.asarray(KANLayer(5, 3, grid_size=4, key=key).coef), np.asarray(layer.coef))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"basis": "chebyshev"}, "basis"),
        ({"grid_size": 0}, "grid_size"),
        ({"order": -1}, "order"),
        ({"radius": 0.0}, "radius"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KANLayer(2, 1, key=jax.random.key(0), **kwargs)
