"""A pytree through TreeLayout's two vectors and back: dtypes, shapes, keys, host unpacking."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.predictor._packing import TreeLayout


class _Tree(NamedTuple):
    weights: jax.Array
    count: jax.Array
    flag: jax.Array
    nested: dict
    key: jax.Array


def _example():
    return _Tree(
        weights=jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),
        count=jnp.asarray(7, jnp.int32),
        flag=jnp.asarray([True, False]),
        nested={"a": jnp.ones((4,), jnp.float32), "b": jnp.asarray([-3, 2], jnp.int32)},
        key=jax.random.key(3, impl="rbg"),
    )


def test_round_trip_inside_and_outside_jit():
    tree = _example()
    layout = TreeLayout(tree)
    assert layout.sizes == (10, 1 + 2 + 2 + 4)
    for rebuilt in (layout.unpack(layout.pack(tree)), jax.jit(lambda t: layout.unpack(layout.pack(t)))(tree)):
        for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(rebuilt)):
            assert a.dtype == b.dtype and a.shape == b.shape
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The key still draws the same numbers.
    np.testing.assert_array_equal(
        np.asarray(jax.random.normal(tree.key, (3,))), np.asarray(jax.random.normal(rebuilt.key, (3,)))
    )


def test_host_unpack_matches_and_refuses_keys():
    tree = _example()._replace(key=jnp.zeros(()))
    layout = TreeLayout(tree)
    host = layout.unpack_host(jax.device_get(layout.pack(tree)))
    assert host.flag.dtype == bool and host.count.dtype == np.int32
    np.testing.assert_array_equal(host.nested["b"], [-3, 2])
    np.testing.assert_array_equal(host.weights, np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="keys"):
        TreeLayout(_example()).unpack_host(jax.device_get(TreeLayout(_example()).pack(_example())))
