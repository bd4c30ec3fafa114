"""State-space duality (SSD): the Mamba-2 scan, chunked, beside a plain recurrence it is tested against.

The recurrence (Dao & Gu 2024, "Transformers are SSMs", §3 and eq. (2)), one head at a time::

    h_t = exp(a_t) * h_{t-1} + x_t b_t^T        h: (head_dim, state)
    y_t = h_t c_t

with ``a_t <= 0`` the log-decay (``dt_t * A`` in Mamba-2) and ``x_t`` already scaled by ``dt_t``.

:func:`ssd_chunked` evaluates it the SSD way (§6, "ssd_minimal"): split time into chunks of ``L``
steps; inside a chunk the output is a masked matmul ``(C B^T ∘ decay) X`` (dense, quadratic in
``L``); each chunk's contribution to the state is one more matmul; a ``lax.scan`` carries the state
across chunks (linear in the number of chunks). :func:`ssd_reference` is the obvious ``lax.scan``
over time steps. Cumulative sums, decays and states are float32 whatever the activation dtype, so
bf16 activations do not compound rounding error along the sequence.

Dimension letters: T time, H heads, P head dim, N state size; inside the kernel C chunks and L, S
positions within a chunk (L the output position, S the source position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["ssd_chunked", "ssd_reference"]

_F32 = jnp.float32


def ssd_reference(
    x: Float[Array, "time heads head_dim"],
    log_a: Float[Array, "time heads"],
    b: Float[Array, "time heads state"],
    c: Float[Array, "time heads state"],
    *,
    initial_state: Float[Array, "heads head_dim state"] | None = None,
) -> tuple[Float[Array, "time heads head_dim"], Float[Array, "heads head_dim state"]]:
    """The SSD recurrence one step at a time (``lax.scan`` over time), all in float32.

    Args:
        x: inputs already multiplied by the step size ``dt``.
        log_a: log of the per-step decay, ``dt * A`` (non-positive).
        b: input projections ``B``.
        c: output projections ``C``.
        initial_state: the state before the first step (zeros when omitted).

    Returns:
        ``(y, final_state)``: outputs in ``x.dtype`` and the float32 state after the last step.
    """
    _, heads, head_dim = x.shape
    state = b.shape[-1]
    h0 = jnp.zeros((heads, head_dim, state), _F32) if initial_state is None else initial_state.astype(_F32)

    def step(h, inputs):
        x_t, a_t, b_t, c_t = inputs
        h = jnp.exp(a_t)[:, None, None] * h + x_t[:, :, None] * b_t[:, None, :]
        return h, jnp.einsum("hpn,hn->hp", h, c_t)

    final, y = jax.lax.scan(step, h0, (x.astype(_F32), log_a.astype(_F32), b.astype(_F32), c.astype(_F32)))
    return y.astype(x.dtype), final


def ssd_chunked(
    x: Float[Array, "time heads head_dim"],
    log_a: Float[Array, "time heads"],
    b: Float[Array, "time heads state"],
    c: Float[Array, "time heads state"],
    *,
    chunk_size: int = 64,
    initial_state: Float[Array, "heads head_dim state"] | None = None,
) -> tuple[Float[Array, "time heads head_dim"], Float[Array, "heads head_dim state"]]:
    """The SSD recurrence by chunks (Dao & Gu 2024, §6): same arguments and results as :func:`ssd_reference`.

    Matmuls take ``x.dtype`` inputs and accumulate in float32; cumulative sums, decays and states
    are float32. ``T`` need not be a multiple of ``chunk_size``: the tail is padded with steps that
    neither decay nor add to the state.
    """
    time, heads, head_dim = x.shape
    state = b.shape[-1]
    dtype = x.dtype
    length = max(1, min(chunk_size, time))
    pad = (-time) % length
    if pad:
        x = jnp.pad(x, ((0, pad), (0, 0), (0, 0)))
        log_a = jnp.pad(log_a, ((0, pad), (0, 0)))
        b = jnp.pad(b, ((0, pad), (0, 0), (0, 0)))
        c = jnp.pad(c, ((0, pad), (0, 0), (0, 0)))
    chunks = (time + pad) // length
    # (chunks, L, heads, ...)
    x = x.reshape(chunks, length, heads, head_dim)
    b = b.astype(dtype).reshape(chunks, length, heads, state)
    c = c.astype(dtype).reshape(chunks, length, heads, state)
    cumulative = jnp.cumsum(log_a.astype(_F32).reshape(chunks, length, heads), axis=1)

    # Within a chunk: y_l = sum_{s<=l} exp(cum_l - cum_s) (c_l . b_s) x_s.
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    # (chunks, heads, L, S)
    cum_heads = jnp.moveaxis(cumulative, 1, 2)
    difference = cum_heads[:, :, :, None] - cum_heads[:, :, None, :]
    # The inner where keeps exp away from the positive (future) differences, so no inf * 0 = NaN
    # reaches the gradient.
    decay = jnp.exp(jnp.where(causal, difference, -jnp.inf))
    scores = jnp.einsum("clhn,cshn->chls", c, b, preferred_element_type=_F32)
    y_within = jnp.einsum("chls,cshp->clhp", (scores * decay).astype(dtype), x, preferred_element_type=_F32)

    # Each chunk's own contribution to the state at its end: sum_s exp(cum_end - cum_s) x_s b_s^T.
    to_end = jnp.exp(cumulative[:, -1:, :] - cumulative)  # (chunks, L, heads)
    chunk_states = jnp.einsum(
        "clhp,clhn->chpn", (x.astype(_F32) * to_end[..., None]), b.astype(_F32), preferred_element_type=_F32
    )
    chunk_decay = jnp.exp(cumulative[:, -1, :])  # (chunks, heads)

    h0 = jnp.zeros((heads, head_dim, state), _F32) if initial_state is None else initial_state.astype(_F32)

    def carry_across(h, inputs):
        decay_c, state_c = inputs
        return decay_c[:, None, None] * h + state_c, h

    final, entering = jax.lax.scan(carry_across, h0, (chunk_decay, chunk_states))

    # The state entering each chunk, decayed to each position and read out by c.
    y_between = jnp.einsum("clhn,chpn->clhp", c.astype(_F32), entering) * jnp.exp(cumulative)[..., None]
    y = (y_within + y_between).reshape(chunks * length, heads, head_dim)[:time]
    return y.astype(dtype), final
