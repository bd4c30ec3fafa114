"""The chunked SSD scan against the plain lax.scan recurrence: values, gradients, dtypes.

Each test compiles one program (compiles dominate the run time on a CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import ssd_chunked, ssd_reference

from ._helpers import max_error


def _inputs(key, time, heads=3, head_dim=4, state=6, dtype=jnp.float32):
    k = jax.random.split(key, 5)
    x = jax.random.normal(k[0], (time, heads, head_dim)).astype(dtype)
    log_a = -jax.nn.softplus(jax.random.normal(k[1], (time, heads)))
    b = jax.random.normal(k[2], (time, heads, state)).astype(dtype)
    c = jax.random.normal(k[3], (time, heads, state)).astype(dtype)
    h0 = jax.random.normal(k[4], (heads, head_dim, state))
    return x, log_a, b, c, h0


def _value_and_grads(scan, **kw):
    def loss(x, log_a, b, c, h0):
        y, final = scan(x, log_a, b, c, initial_state=h0, **kw)
        # Fixed weights so every output position and state entry gets its own gradient.
        w_y = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        w_h = jnp.sin(jnp.arange(final.size, dtype=jnp.float32)).reshape(final.shape)
        return jnp.sum(w_y * y) + jnp.sum(w_h * final), (y, final)

    return jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)


@pytest.mark.parametrize(
    "time, chunk",
    [pytest.param(1, 4, marks=pytest.mark.slow), (7, 4), pytest.param(45, 16, marks=pytest.mark.slow)],
)
def test_chunked_matches_reference_in_values_and_gradients(key, time, chunk):
    @jax.jit
    def both(*inputs):
        return _value_and_grads(ssd_chunked, chunk_size=chunk)(*inputs), _value_and_grads(ssd_reference)(
            *inputs
        )

    (grads, outputs), (grads_ref, outputs_ref) = both(*_inputs(key, time))
    assert max_error(outputs, outputs_ref) <= 1e-5
    assert max_error(grads, grads_ref) <= 1e-5
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_chunk_size_and_segmenting_do_not_change_the_result(key):
    @jax.jit
    def variants(x, log_a, b, c, h0):
        by_size = [ssd_chunked(x, log_a, b, c, initial_state=h0, chunk_size=n) for n in (5, 50)]
        first, middle = ssd_chunked(x[:13], log_a[:13], b[:13], c[:13], initial_state=h0, chunk_size=8)
        second, end = ssd_chunked(x[13:], log_a[13:], b[13:], c[13:], initial_state=middle, chunk_size=8)
        return by_size, (jnp.concatenate([first, second]), end)

    by_size, segmented = variants(*_inputs(key, 50))
    for other in (*by_size[1:], segmented):
        assert max_error(other, by_size[0]) <= 1e-5


def test_bf16_activations_keep_float32_state(key):
    inputs = _inputs(key, 96, dtype=jnp.bfloat16)

    @jax.jit
    def both(x, log_a, b, c, h0):
        return ssd_chunked(x, log_a, b, c, initial_state=h0, chunk_size=32), ssd_reference(
            x, log_a, b, c, initial_state=h0
        )

    (y, final), (y_ref, final_ref) = both(*inputs)
    assert y.dtype == jnp.bfloat16 and final.dtype == jnp.float32
    # bf16 rounds the matmul inputs (8 mantissa bits); the float32 decays and states add no drift.
    assert max_error(y, y_ref) <= 3e-2
    assert max_error(final, final_ref) <= 3e-2


def test_strong_decay_over_long_chunks_stays_finite(key):
    x, log_a, b, c, h0 = _inputs(key, 256)
    log_a = 20.0 * log_a  # per-step decays down to exp(-60)

    @jax.jit
    def run(*inputs):
        return _value_and_grads(ssd_chunked, chunk_size=128)(*inputs), ssd_reference(
            *inputs[:4], initial_state=inputs[4]
        )

    (grads, (y, _)), (y_ref, _) = run(x, log_a, b, c, h0)
    assert max_error(y, y_ref) <= 1e-5
    assert all(np.all(np.isfinite(g)) for g in grads)
