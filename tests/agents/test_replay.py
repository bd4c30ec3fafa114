"""The ring replay buffer: wrap-around, sampling only filled slots, shapes, determinism per key."""

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm.agents import Transition, replay_add, replay_add_batch, replay_init, replay_sample


def _transition(i, obs_dim=3):
    return Transition(obs=jnp.full((obs_dim,), float(i)), action=jnp.int32(i % 4), reward=jnp.float32(i),
                      next_obs=jnp.full((obs_dim,), float(i + 1)), done=jnp.float32(0.0))


def test_init_shapes_and_dtypes():
    state = replay_init(5, _transition(0))
    assert state.storage.obs.shape == (5, 3) and state.storage.action.shape == (5,)
    assert state.storage.action.dtype == jnp.int32 and state.storage.reward.dtype == jnp.float32
    assert int(state.size) == 0 and int(state.position) == 0


def test_add_wraps_around_at_capacity():
    add = jax.jit(replay_add)
    state = replay_init(4, _transition(0))
    for i in range(6):
        state = add(state, _transition(i))
    assert int(state.size) == 4 and int(state.position) == 2
    # Slots 0 and 1 hold the fifth and sixth transitions; 2 and 3 the third and fourth.
    np.testing.assert_array_equal(state.storage.reward, [4.0, 5.0, 2.0, 3.0])
    np.testing.assert_array_equal(state.storage.next_obs[:, 0], [5.0, 6.0, 3.0, 4.0])


def test_add_batch_equals_sequential_adds():
    batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[_transition(i) for i in range(3, 12)])  # B = 9
    for capacity in (4, 9, 13):
        for start in (0, 3):
            one_by_one = replay_init(capacity, _transition(0))
            for i in range(start):
                one_by_one = replay_add(one_by_one, _transition(100 + i))
            at_once = jax.jit(replay_add_batch)(one_by_one, batch)
            for i in range(3, 12):
                one_by_one = replay_add(one_by_one, _transition(i))
            for got, want in zip(jax.tree_util.tree_leaves(at_once), jax.tree_util.tree_leaves(one_by_one)):
                np.testing.assert_array_equal(got, want)


def test_sample_only_filled_slots_and_deterministic(key):
    state = replay_init(100, _transition(0))
    for i in range(1, 8):  # rewards 1..7 fill slots 0..6; slot 7 onwards stay zero
        state = replay_add(state, _transition(i))
    sample = jax.jit(replay_sample, static_argnums=1)
    batch = sample(state, 500, key=key)
    assert batch.obs.shape == (500, 3) and batch.action.shape == (500,) and batch.done.shape == (500,)
    rewards = np.asarray(batch.reward)
    assert set(rewards.tolist()) == set(range(1, 8))  # every filled slot drawn, no empty one
    np.testing.assert_array_equal(batch.obs[:, 0], batch.reward)  # fields stay aligned
    again = sample(state, 500, key=key)
    np.testing.assert_array_equal(again.reward, batch.reward)
    other = sample(state, 500, key=jax.random.fold_in(key, 1))
    assert not np.array_equal(other.reward, batch.reward)


def test_vmap_over_buffers(key):
    example = _transition(0)
    states = jax.vmap(lambda _: replay_init(8, example))(jnp.arange(2))
    states = jax.vmap(replay_add)(states, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), _transition(1), _transition(2)))
    batches = jax.vmap(lambda s, k: replay_sample(s, 4, key=k))(states, jax.random.split(key, 2))
    np.testing.assert_array_equal(batches.reward, [[1.0] * 4, [2.0] * 4])
