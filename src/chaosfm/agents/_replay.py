"""A fixed-size ring replay buffer as pure functions over a NamedTuple state (as optax does).

:func:`replay_init` allocates ``C`` slots shaped like one example transition (any pytree of arrays,
usually a :class:`Transition`); :func:`replay_add` and :func:`replay_add_batch` write at the ring's
position and overwrite the oldest slots once it is full; :func:`replay_sample` draws ``B`` slots
uniformly, with replacement, from the filled ones. Every function is jit-able and the state
snapshots, scans and vmaps like any pytree (one buffer per seed with ``jax.vmap``).

flashbax offers the same and more; it was passed over to avoid a dependency for about sixty lines.

Dimension letters: C capacity (slots), B batch of transitions added or sampled.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

__all__ = ["ReplayState", "Transition", "replay_add", "replay_add_batch", "replay_init", "replay_sample"]


class Transition(NamedTuple):
    """One step of experience ``(s, a, r, s', done)``; a batch has a leading axis on every field.

    Attributes:
        obs: the observation ``s`` the action was taken in.
        action: the action index ``a`` (int32).
        reward: the reward ``r`` received.
        next_obs: the observation ``s'`` that followed.
        done: 1.0 when ``s'`` is terminal (no bootstrap from it), else 0.0.
    """

    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    done: Any


class ReplayState(NamedTuple):
    """A ring buffer of ``C`` slots.

    Attributes:
        storage: the example pytree with a leading ``C`` axis on every leaf.
        position: the slot the next transition is written to, in ``[0, C)``.
        size: the number of filled slots, in ``[0, C]``.
    """

    storage: Any
    position: Int[Array, ""]
    size: Int[Array, ""]


def _capacity(state: ReplayState) -> int:
    return jax.tree_util.tree_leaves(state.storage)[0].shape[0]


def replay_init(capacity: int, example_transition: Any) -> ReplayState:
    """An empty buffer of ``capacity`` slots, each shaped and typed like ``example_transition``."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    storage = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros((capacity, *jnp.shape(leaf)), jnp.asarray(leaf).dtype), example_transition
    )
    return ReplayState(storage, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_add(state: ReplayState, transition: Any) -> ReplayState:
    """``state`` with ``transition`` written at its position (overwriting the oldest when full)."""
    capacity = _capacity(state)
    storage = jax.tree_util.tree_map(
        lambda slots, leaf: slots.at[state.position].set(jnp.asarray(leaf, slots.dtype)), state.storage, transition
    )
    return ReplayState(storage, (state.position + 1) % capacity, jnp.minimum(state.size + 1, capacity))


def replay_add_batch(state: ReplayState, transitions: Any) -> ReplayState:
    """``state`` with ``B`` transitions (a leading ``B`` axis on every leaf) written in order, as
    ``B`` calls of :func:`replay_add` would. With ``B > C`` only the last ``C`` survive."""
    capacity = _capacity(state)
    count = jax.tree_util.tree_leaves(transitions)[0].shape[0]
    kept = min(count, capacity)
    # Writing more than C at once would scatter twice into one slot (order undefined): drop the
    # ones a sequential write would overwrite anyway.
    transitions = jax.tree_util.tree_map(lambda leaf: leaf[count - kept:], transitions)
    start = (state.position + (count - kept)) % capacity
    slots = (start + jnp.arange(kept, dtype=jnp.int32)) % capacity  # (B,)
    storage = jax.tree_util.tree_map(
        lambda buffer, leaf: buffer.at[slots].set(jnp.asarray(leaf, buffer.dtype)), state.storage, transitions
    )
    return ReplayState(storage, (state.position + count) % capacity, jnp.minimum(state.size + count, capacity))


def replay_sample(state: ReplayState, batch_size: int, *, key: PRNGKeyArray) -> Any:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots.

    The same key and state give the same batch. An empty buffer cannot be checked under ``jit``:
    sampling it returns copies of the zero-filled slot 0.

    Returns:
        The stored pytree with a leading ``B`` axis on every leaf.
    """
    slots = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1), dtype=jnp.int32)  # (B,)
    return jax.tree_util.tree_map(lambda buffer: buffer[slots], state.storage)
