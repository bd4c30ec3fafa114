"""A pytree packed into one float and one int32 vector, so a jitted step moves two arrays.

A jitted call pays per argument and per result leaf: on this CPU about 3-6 us each, so the
predictor's state (about 120 leaves: network weights, Adam moments, buffers, a key) cost ~0.6 ms
per step in dispatch alone, more than all of its arithmetic. :class:`TreeLayout` records where
each leaf lives so the state can cross the jit boundary as two vectors and be rebuilt inside
(slices and reshapes that XLA fuses away). Floats go to the float vector; integers, booleans and
PRNG key data (bit-cast) to the int vector. The float vector has the dtype of the tree's floats
(float32, or float64 with x64 on), so packing never rounds a leaf.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Packed(NamedTuple):
    floats: jax.Array  # (P,) float32, or float64 for a float64 tree
    ints: jax.Array  # (I,) int32


class _Slot(NamedTuple):
    kind: str  # "float", "int", "bool" or "key"
    shape: tuple[int, ...]  # of the leaf (of its key data for keys)
    dtype: Any
    start: int
    size: int
    impl: Any  # PRNG implementation of a key leaf, else None


class TreeLayout:
    """Where each leaf of pytrees shaped like ``example`` lives in a :class:`Packed` pair."""

    def __init__(self, example: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten(example)
        slots, used = [], {"float": 0, "int": 0}
        for leaf in leaves:
            # Arrays or jax.ShapeDtypeStruct (keys must be concrete: their implementation is read).
            dtype, shape, impl = leaf.dtype, tuple(leaf.shape), None
            if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
                kind, impl = "key", jax.random.key_impl(leaf)
                shape = tuple(jax.random.key_data(leaf).shape)
            elif jnp.issubdtype(dtype, jnp.floating):
                kind = "float"
            elif dtype == jnp.bool_:
                kind = "bool"
            elif jnp.issubdtype(dtype, jnp.integer) and jnp.iinfo(dtype).bits <= 32:
                kind = "int"
            else:
                raise TypeError(f"cannot pack a leaf of dtype {dtype}")
            vector = "float" if kind == "float" else "int"
            size = int(np.prod(shape, dtype=np.int64))
            slots.append(_Slot(kind, shape, dtype, used[vector], size, impl))
            used[vector] += size
        self.slots = tuple(slots)
        self.sizes = (used["float"], used["int"])
        floats = [slot.dtype for slot in slots if slot.kind == "float"]
        self.float_dtype = jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)

    def pack(self, tree: Any) -> Packed:
        """``tree -> Packed`` (inside jit or outside)."""
        leaves = self.treedef.flatten_up_to(tree)
        floats, ints = [], []
        for slot, leaf in zip(self.slots, leaves):
            if slot.kind == "float":
                floats.append(jnp.ravel(jnp.asarray(leaf, self.float_dtype)))
            elif slot.kind == "key":
                data = jax.random.key_data(leaf).astype(jnp.uint32)
                ints.append(jnp.ravel(jax.lax.bitcast_convert_type(data, jnp.int32)))
            else:
                ints.append(jnp.ravel(jnp.asarray(leaf).astype(jnp.int32)))
        return Packed(_concatenate(floats, self.float_dtype), _concatenate(ints, jnp.int32))

    def unpack(self, packed: Packed) -> Any:
        """``Packed -> tree`` with the example's dtypes and shapes (inside jit or outside)."""
        leaves = []
        for slot in self.slots:
            source = packed.floats if slot.kind == "float" else packed.ints
            flat = jax.lax.slice_in_dim(source, slot.start, slot.start + slot.size)
            value = flat.reshape(slot.shape)
            if slot.kind == "key":
                data = jax.lax.bitcast_convert_type(value, jnp.uint32)
                value = jax.random.wrap_key_data(data, impl=slot.impl)
            elif slot.kind == "bool":
                value = value != 0
            else:
                value = value.astype(slot.dtype)
            leaves.append(value)
        return self.treedef.unflatten(leaves)

    def unpack_host(self, packed: Packed) -> Any:
        """:meth:`unpack` in NumPy for host copies (no dispatch per leaf; no key leaves).

        Float leaves are views into the float vector; integer and boolean leaves are converted.
        """
        floats, ints = np.asarray(packed.floats), np.asarray(packed.ints)
        leaves = []
        for slot in self.slots:
            if slot.kind == "key":
                raise TypeError("unpack_host cannot rebuild PRNG keys; use unpack")
            if slot.kind == "float":
                leaves.append(floats[slot.start : slot.start + slot.size].reshape(slot.shape))
                continue
            value = ints[slot.start : slot.start + slot.size].reshape(slot.shape)
            leaves.append(value != 0 if slot.kind == "bool" else value.astype(slot.dtype, copy=False))
        return self.treedef.unflatten(leaves)


def _concatenate(parts: list[jax.Array], dtype) -> jax.Array:
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)
