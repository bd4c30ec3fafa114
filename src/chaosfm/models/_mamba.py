"""Mamba-2 over codes, with the exo-clock, hybrid attention layers and two Mamba-3 variants.

A Mamba-2 mixer (Dao & Gu 2024, §7) projects each position to a gate ``z``, an input ``x``, shared
``B`` and ``C`` and a per-head step size ``dt``; a short causal depthwise convolution mixes
``x, B, C`` locally; the selective state space recurrence of :mod:`chaosfm.models._ssd` runs per
head; the output is ``norm(y * silu(z)) W_out``. Options, each off by default:

* ``exo_clock``: the step size is modulated by an exogenous series (causal realized volatility,
  standardised in log space by the caller): ``dt_t = softplus(raw_t + bias) * exp(gain * v_t)``.
  Volatile stretches advance the clock faster, so the state forgets and absorbs more per bar,
  as if volatile bars held more business time.
* ``attention_every = N``: every N-th layer is a GPT block (sliding-window attention + MLP)
  instead of a mixer, the hybrid layout of Jamba / Samba / Nemotron-H.
* ``gated_mlp``: every mixer layer is followed by a gated MLP (SwiGLU, ``mlp_ratio * d_model``
  wide) in its own pre-norm residual, ``h + mixer(norm h)`` then ``+ mlp(norm h)``
  (:class:`MambaBlock`), as the Transformer-style blocks of Mamba-3's language models; without it a
  layer is the mixer alone, Mamba-2's layout.
* ``trapezoidal`` (Mamba-3, Lahoti et al. 2025, §3.1): the generalised trapezoidal rule
  ``h_t = a_t h_{t-1} + g_t B_t x_t + b_t B_{t-1} x_{t-1}`` with ``g_t = lam_t dt_t``,
  ``b_t = (1 - lam_t) dt_t a_t`` and a data-dependent ``lam_t in (0, 1)`` (``lam = 1`` is
  Mamba-2's Euler rule).
* ``complex_phase`` (Mamba-3, §3.2): a complex-valued state whose pairs rotate by a
  data-dependent angle ``dt_t theta_t`` each step. Equivalently (the "RoPE trick"), a real
  state with ``B`` and ``C`` rotated by the cumulative angle, which is how it is computed.
* ``bc_norm`` (Mamba-3's BC normalisation, the SSM's counterpart of QK-norm): ``B`` and ``C``
  are RMS-normalised over the state at each step, each with a learned gain (initialised 1), so
  the size of ``C_t^T B_s`` is set by the gains and the step sizes rather than by how large the
  input projections grow.
* A per-step ``clock`` (the mixer's call, not the config): ``dt_t`` is multiplied by
  ``clock_t >= 0``, the market time that passed since the previous step in bar units
  (:func:`chaosfm.data.session_clock`). ``clock_t = 0`` (a row inside a market closure) gives
  ``dt_t = 0``: no decay, no input and no rotation, so the state passes the row unchanged
  (session gating); a bar after a missing one advances the clock by 2. With ``trapezoidal`` the
  step after a closed row takes the Euler rule: the trapezoid pairs a step with its predecessor,
  and across a closure there is no open predecessor (within one call: a segment that starts right
  after a closed row, when streaming, still pairs with it).

Both Mamba-3 variants are folded into the one chunked SSD kernel: the rotation becomes rotated
``B, C``; the trapezoid becomes a per-step input weight ``e_t = g_t + (1 - lam_{t+1}) dt_{t+1}``
plus a diagonal correction (derivation in :func:`selective_scan`). :func:`selective_scan_reference`
runs the same recurrences literally, in the original frame, for the tests.

Dimension letters: T time, D model width, I inner width (= H * P), H heads, P head dim,
N state size, R rotation pairs (= N / 2).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.models._base import AbstractCodeModel, init_rng, normal_init, rms_norm
from chaosfm.models._gpt import MLP, Attention, Block, GatedMLP, KVMemory
from chaosfm.models._ssd import ssd_chunked

__all__ = [
    "MAMBA_SIZES",
    "Mamba",
    "Mamba2Mixer",
    "MambaBlock",
    "MambaConfig",
    "MixerState",
    "ScanCarry",
    "apply_layer",
    "mamba_layers",
    "selective_scan",
    "selective_scan_reference",
]

_F32 = jnp.float32
_CLOCK_LIMIT = 5.0  # |gain * v| is clipped here: exp(5) ~ 150x is already a violent clock change

MAMBA_SIZES: dict[str, dict[str, int]] = {
    # ~0.95M parameters with a 256-code vocabulary.
    "tiny": {"d_model": 128, "n_layers": 8, "d_state": 32, "head_dim": 32},
    # ~3.6M.
    "mini": {"d_model": 256, "n_layers": 8, "d_state": 64, "head_dim": 64},
    # ~20M.
    "small": {"d_model": 512, "n_layers": 12, "d_state": 64, "head_dim": 64},
}


@dataclass(frozen=True)
class MambaConfig:
    """Everything that fixes a Mamba model's shapes, options and numerics; saved beside the weights."""

    vocab_size: int = 256  # codes the tokenizer emits; the head scores each of them
    context_length: int = 256  # training window; also the span of the hybrid attention layers
    d_model: int = 128  # residual stream width
    n_layers: int = 8  # depth; mixers, and attention blocks when attention_every > 0
    d_state: int = 32  # SSM state size N per head; even, so complex_phase can pair it
    head_dim: int = 32  # P; heads = expand * d_model / head_dim
    expand: int = 2  # inner width over d_model, Mamba's default
    d_conv: int = 4  # causal depthwise conv width over x, B, C, Mamba's default
    chunk_size: int = 64  # SSD chunk: dense matmuls within, a scan across; 64 suits CPU caches
    dt_min: float = 1e-3  # initial step sizes are log-uniform in [dt_min, dt_max] (Mamba init)
    dt_max: float = 1e-1
    attention_every: int = 0  # 0: pure Mamba; N: every N-th layer is a GPT attention block
    attention_heads: int = 4  # query heads of those attention blocks
    attention_kv_heads: int = 2  # key/value heads of those attention blocks (GQA)
    mlp_ratio: int = 4  # MLP width of those attention blocks over d_model
    exo_clock: bool = False  # dt modulated by an exogenous series (realized volatility)
    trapezoidal: bool = False  # Mamba-3 trapezoidal discretisation
    complex_phase: bool = False  # Mamba-3 complex (rotating) state via rotary B, C
    bc_norm: bool = False  # Mamba-3 BC normalisation: RMS-normalised B and C with learned gains
    gated_mlp: bool = False  # a SwiGLU MLP after every mixer, in its own residual (MambaBlock)
    dtype: str = "float32"  # activation dtype; SSM cumsums, decays and states stay float32

    def __post_init__(self) -> None:
        problems = []
        if self.vocab_size < 2:
            problems.append(("vocab_size", "must be at least 2"))
        if self.context_length < 1:
            problems.append(("context_length", "must be positive"))
        if (self.expand * self.d_model) % self.head_dim:
            problems.append(("head_dim", f"must divide expand * d_model = {self.expand * self.d_model}"))
        if self.d_state % 2:
            problems.append(("d_state", "must be even"))
        if self.attention_every < 0:
            problems.append(("attention_every", "must be 0 (off) or positive"))
        if self.attention_every and (
            self.d_model % self.attention_heads or (self.d_model // self.attention_heads) % 2
        ):
            problems.append(("attention_heads", "must divide d_model into an even head dim"))
        if self.attention_every and self.attention_heads % self.attention_kv_heads:
            problems.append(("attention_kv_heads", "must divide attention_heads"))
        if not 0 < self.dt_min <= self.dt_max:
            problems.append(("dt_min", "need 0 < dt_min <= dt_max"))
        if self.chunk_size < 1:
            problems.append(("chunk_size", "must be positive"))
        if self.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(("dtype", "must be float32, bfloat16 or float16"))
        if problems:
            raise ValueError("; ".join(f"{key}: {rule}" for key, rule in problems))

    @property
    def heads(self) -> int:
        return self.expand * self.d_model // self.head_dim

    def is_attention(self, layer: int) -> bool:
        return bool(self.attention_every) and (layer + 1) % self.attention_every == 0

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> "MambaConfig":
        """A preset from :data:`MAMBA_SIZES` with ``overrides`` on top."""
        if size not in MAMBA_SIZES:
            raise ValueError(f"size: unknown Mamba size {size!r}; known: {sorted(MAMBA_SIZES)}")
        return cls(**{**MAMBA_SIZES[size], **overrides})

    def replace(self, **changes: Any) -> "MambaConfig":
        return dataclasses.replace(self, **changes)


class ScanCarry(NamedTuple):
    """What the scan carries between segments, in the rotated frame when ``complex_phase``.

    ``ssm`` is the state; ``phase`` the cumulative rotation angle (complex_phase); ``previous_b``
    and ``previous_x`` the last step's rotated ``B`` and ``x`` (trapezoidal). Unused fields are None.
    """

    ssm: Float[Array, "heads head_dim state"]
    phase: Float[Array, "heads pairs"] | None
    previous_b: Float[Array, "heads state"] | None
    previous_x: Float[Array, "heads head_dim"] | None


class MixerState(NamedTuple):
    """A mixer's streaming state: the conv's last ``d_conv - 1`` inputs and the scan carry."""

    conv: Float[Array, "taps channels"]
    scan: ScanCarry


def _rotate(u: Float[Array, "... state"], angle: Float[Array, "... pairs"]) -> Float[Array, "... state"]:
    """Rotate pairs ``(u[k], u[k + N/2])`` by ``angle[k]`` (counter-clockwise)."""
    half = u.shape[-1] // 2
    u1, u2 = u[..., :half], u[..., half:]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return jnp.concatenate([u1 * cos - u2 * sin, u1 * sin + u2 * cos], axis=-1)


def empty_carry(
    heads: int, head_dim: int, state: int, *, trapezoidal: bool, complex_phase: bool
) -> ScanCarry:
    return ScanCarry(
        ssm=jnp.zeros((heads, head_dim, state), _F32),
        phase=jnp.zeros((heads, state // 2), _F32) if complex_phase else None,
        previous_b=jnp.zeros((heads, state), _F32) if trapezoidal else None,
        previous_x=jnp.zeros((heads, head_dim), _F32) if trapezoidal else None,
    )


def selective_scan(
    x: Float[Array, "time heads head_dim"],
    dt: Float[Array, "time heads"],
    a: Float[Array, " heads"],
    b: Float[Array, "time state"],
    c: Float[Array, "time state"],
    *,
    lam: Float[Array, "time heads"] | None = None,
    theta: Float[Array, "time pairs"] | None = None,
    carry: ScanCarry | None = None,
    chunk_size: int = 64,
) -> tuple[Float[Array, "time heads head_dim"], ScanCarry]:
    """The selective SSM (Euler, or trapezoidal with ``lam``; real, or rotating with ``theta``) by SSD chunks.

    Args:
        x: inputs (not yet scaled by ``dt``).
        dt: positive step sizes.
        a: negative per-head continuous-time decay rates ``A``.
        b, c: input and output projections shared by the heads.
        lam: trapezoid weights in (0, 1) (Mamba-3 §3.1); None for the Euler rule.
        theta: rotation rates (Mamba-3 §3.2); the state's pair k turns by ``dt * theta[k]`` per step.
        carry: the carry from the previous segment; None for a fresh start.
        chunk_size: SSD chunk length.

    Returns:
        ``(y, carry)`` with ``y`` in ``x.dtype``.

    The trapezoid ``h_t = a_t h_{t-1} + g_t v_t + b_t v_{t-1}`` (``v_t = B_t x_t^T``,
    ``b_t = (1 - lam_t) dt_t a_t``) unrolls to ``h_t = sum_{s<=t} L[t,s] e_s v_s - (e_t - g_t) v_t``
    with ``e_s = g_s + (1 - lam_{s+1}) dt_{s+1}`` (``a_{s+1}`` cancels against ``L[t,s+1] = L[t,s] /
    a_{s+1}``): an ordinary SSD with inputs ``e_s x_s`` minus a diagonal term. The last step of a
    segment has ``e = g`` (its successor's weight is not known yet), so the carried state is exact,
    and the successor's ``b`` term enters the next segment through its initial state.
    """
    time, heads, head_dim = x.shape
    state = b.shape[-1]
    if carry is None:
        carry = empty_carry(
            heads, head_dim, state, trapezoidal=lam is not None, complex_phase=theta is not None
        )
    dt = dt.astype(_F32)
    log_a = dt * a.astype(_F32)[None, :]
    # (time, heads, state)
    b_heads = jnp.broadcast_to(b.astype(_F32)[:, None, :], (time, heads, state))
    c_heads = jnp.broadcast_to(c.astype(_F32)[:, None, :], (time, heads, state))
    phase_out = None
    if theta is not None:
        # (time, heads, pairs): cumulative angles in float32, like every other cumsum here.
        phase = carry.phase[None] + jnp.cumsum(dt[:, :, None] * theta.astype(_F32)[:, None, :], axis=0)
        b_heads, c_heads = _rotate(b_heads, -phase), _rotate(c_heads, -phase)
        phase_out = jnp.mod(phase[-1], 2 * math.pi)
    h0 = carry.ssm
    if lam is None:
        weight = dt
    else:
        lam = lam.astype(_F32)
        gain_now = lam * dt
        gain_next = jnp.concatenate([(1 - lam[1:]) * dt[1:], jnp.zeros((1, heads), _F32)])
        weight = gain_now + gain_next
        first = (1 - lam[0]) * dt[0]
        h0 = h0 + first[:, None, None] * carry.previous_x[:, :, None] * carry.previous_b[:, None, :]
    x_in = (x.astype(_F32) * weight[..., None]).astype(x.dtype)
    y, final = ssd_chunked(x_in, log_a, b_heads, c_heads, chunk_size=chunk_size, initial_state=h0)
    previous_b = previous_x = None
    if lam is not None:
        overlap = jnp.sum(c_heads * b_heads, axis=-1)  # (time, heads)
        y = (y.astype(_F32) - (gain_next * overlap)[..., None] * x.astype(_F32)).astype(x.dtype)
        previous_b, previous_x = b_heads[-1], x[-1].astype(_F32)
    return y, ScanCarry(final, phase_out, previous_b, previous_x)


def selective_scan_reference(
    x: Float[Array, "time heads head_dim"],
    dt: Float[Array, "time heads"],
    a: Float[Array, " heads"],
    b: Float[Array, "time state"],
    c: Float[Array, "time state"],
    *,
    lam: Float[Array, "time heads"] | None = None,
    theta: Float[Array, "time pairs"] | None = None,
    carry: ScanCarry | None = None,
    chunk_size: int = 64,
) -> tuple[Float[Array, "time heads head_dim"], ScanCarry]:
    """:func:`selective_scan` done literally: one ``lax.scan`` step per time step, in float32, with
    the state rotating in its own frame (``h_t = a_t R_t h_{t-1} + ...``) rather than rotated ``B, C``.
    ``chunk_size`` is ignored."""
    del chunk_size
    time, heads, head_dim = x.shape
    state = b.shape[-1]
    trapezoidal, complex_phase = lam is not None, theta is not None
    if carry is None:
        carry = empty_carry(heads, head_dim, state, trapezoidal=trapezoidal, complex_phase=complex_phase)
    x, dt, a, b, c = (v.astype(_F32) for v in (x, dt, a, b, c))
    lam = jnp.ones((time, heads), _F32) if lam is None else lam.astype(_F32)
    steps = jnp.zeros((time, state // 2), _F32) if theta is None else theta.astype(_F32)
    phase0 = carry.phase if complex_phase else jnp.zeros((heads, state // 2), _F32)

    def rotate_state(h, angle):  # h: (heads, head_dim, state), angle: (heads, pairs)
        return _rotate(h, jnp.broadcast_to(angle[:, None, :], (heads, head_dim, state // 2)))

    # Back from the carry's rotated frame to the original one.
    h0 = rotate_state(carry.ssm, phase0)
    if trapezoidal:
        previous_b = _rotate(carry.previous_b, phase0)
        previous_x = carry.previous_x
    else:
        previous_b, previous_x = jnp.zeros((heads, state), _F32), jnp.zeros((heads, head_dim), _F32)

    def step(carried, inputs):
        h, phase, b_prev, x_prev = carried
        x_t, dt_t, lam_t, b_t, c_t, theta_t = inputs
        decay = jnp.exp(dt_t * a)  # (heads,)
        angle = dt_t[:, None] * theta_t[None, :]  # (heads, pairs)
        b_now = jnp.broadcast_to(b_t[None, :], (heads, state))
        now = (lam_t * dt_t)[:, None, None] * x_t[:, :, None] * b_now[:, None, :]
        before = ((1 - lam_t) * dt_t * decay)[:, None, None] * x_prev[:, :, None] * b_prev[:, None, :]
        h = decay[:, None, None] * rotate_state(h, angle) + now + rotate_state(before, angle)
        y_t = jnp.einsum("hpn,n->hp", h, c_t)
        return (h, phase + angle, b_now, x_t), y_t

    inputs = (x, dt, lam, b, c, steps)
    (h, phase, last_b, last_x), y = jax.lax.scan(step, (h0, phase0, previous_b, previous_x), inputs)
    # Into the rotated frame the chunked path carries, so the two carries compare directly.
    ssm = rotate_state(h, -phase)
    out = ScanCarry(
        ssm=ssm,
        phase=jnp.mod(phase, 2 * math.pi) if complex_phase else None,
        previous_b=_rotate(last_b, -phase) if trapezoidal else None,
        previous_x=last_x if trapezoidal else None,
    )
    return y, out


class Mamba2Mixer(eqx.Module):
    """One Mamba-2 mixer (SSD layer) with the module's options; processes one sequence."""

    w_in: Float[Array, "d_model projections"]
    conv: Float[Array, "taps channels"]
    dt_bias: Float[Array, " heads"]
    a_log: Float[Array, " heads"]
    skip: Float[Array, " heads"]
    w_out: Float[Array, "inner d_model"]
    clock_gain: Float[Array, " heads"] | None
    b_gain: Float[Array, " state"] | None  # bc_norm's learned gains; None without it
    c_gain: Float[Array, " state"] | None
    heads: int = eqx.field(static=True)
    head_dim: int = eqx.field(static=True)
    d_state: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    trapezoidal: bool = eqx.field(static=True)
    complex_phase: bool = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(self, config: MambaConfig, *, key: PRNGKeyArray | np.random.Generator):
        inner, heads, state = config.expand * config.d_model, config.heads, config.d_state
        width = 2 * inner + 2 * state + heads
        width += heads if config.trapezoidal else 0
        width += state // 2 if config.complex_phase else 0
        rng = init_rng(key)
        self.w_in = normal_init(rng, (config.d_model, width), config.d_model**-0.5)
        channels = inner + 2 * state
        self.conv = normal_init(rng, (config.d_conv, channels), config.d_conv**-0.5)
        dt = np.exp(rng.uniform(math.log(config.dt_min), math.log(config.dt_max), heads))
        self.dt_bias = jnp.asarray(dt + np.log(-np.expm1(-dt)), _F32)  # inverse softplus
        self.a_log = jnp.asarray(np.log(rng.uniform(1.0, 16.0, heads)), _F32)
        self.skip = jnp.ones((heads,), _F32)
        self.w_out = jnp.zeros((inner, config.d_model), _F32)
        self.clock_gain = jnp.ones((heads,), _F32) if config.exo_clock else None
        self.b_gain = jnp.ones((state,), _F32) if config.bc_norm else None
        self.c_gain = jnp.ones((state,), _F32) if config.bc_norm else None
        self.heads, self.head_dim, self.d_state = heads, config.head_dim, state
        self.chunk_size = config.chunk_size
        self.trapezoidal, self.complex_phase = config.trapezoidal, config.complex_phase
        self.dtype = config.dtype

    def init_state(self) -> MixerState:
        taps, channels = self.conv.shape
        return MixerState(
            conv=jnp.zeros((taps - 1, channels), jnp.dtype(self.dtype)),
            scan=empty_carry(
                self.heads,
                self.head_dim,
                self.d_state,
                trapezoidal=self.trapezoidal,
                complex_phase=self.complex_phase,
            ),
        )

    def __call__(
        self,
        x: Float[Array, "time d_model"],
        state: MixerState | None = None,
        exo: Float[Array, " time"] | None = None,
        *,
        clock: Float[Array, " time"] | None = None,
        reference: bool = False,
    ) -> tuple[Float[Array, "time d_model"], MixerState | None]:
        """The mixer's output for ``x`` and, when ``state`` is given, the state after it.

        ``exo``: the exogenous series of an ``exo_clock`` mixer; ``clock``: the market time of each
        step in bar units (0 inside a closure: the state passes the step unchanged), None for 1;
        ``reference``: the literal scan (tests)."""
        dtype = jnp.dtype(self.dtype)
        time = x.shape[0]
        inner, n, heads = self.heads * self.head_dim, self.d_state, self.heads
        projected = x.astype(dtype) @ self.w_in.astype(dtype)
        sizes = [inner, inner + 2 * n, heads]
        sizes += [heads] if self.trapezoidal else []
        sizes += [n // 2] if self.complex_phase else []
        parts = jnp.split(projected, list(itertools.accumulate(sizes))[:-1], axis=-1)
        z, xbc, dt_raw = parts[0], parts[1], parts[2]
        extra = iter(parts[3:])
        lam = jax.nn.sigmoid(next(extra).astype(_F32)) if self.trapezoidal else None
        theta = next(extra).astype(_F32) if self.complex_phase else None

        taps = self.conv.shape[0]
        history = jnp.zeros((taps - 1, xbc.shape[1]), dtype) if state is None else state.conv.astype(dtype)
        padded = jnp.concatenate([history, xbc])
        conv = self.conv.astype(dtype)
        mixed = sum(padded[k : k + time] * conv[k][None, :] for k in range(taps))
        xbc = jax.nn.silu(mixed)
        x_ssm, b, c = jnp.split(xbc, [inner, inner + n], axis=-1)
        x_ssm = x_ssm.reshape(time, heads, self.head_dim)  # (time, heads, head_dim)
        if self.b_gain is not None:
            b = (rms_norm(b).astype(_F32) * self.b_gain[None, :]).astype(dtype)
            c = (rms_norm(c).astype(_F32) * self.c_gain[None, :]).astype(dtype)

        dt = jax.nn.softplus(dt_raw.astype(_F32) + self.dt_bias[None, :])
        if self.clock_gain is not None:
            if exo is None:
                raise ValueError("exo_clock=True: pass exo (realized volatility per code) to the model")
            stretch = jnp.clip(
                self.clock_gain[None, :] * exo.astype(_F32)[:, None], -_CLOCK_LIMIT, _CLOCK_LIMIT
            )
            dt = dt * jnp.exp(stretch)
        if clock is not None:
            clock = clock.astype(_F32)
            dt = dt * clock[:, None]
            if lam is not None:
                # The trapezoid pairs a step with the one before it; after a closed row there is no
                # open one to pair with, so that step takes the Euler rule (lam = 1).
                after_closure = jnp.concatenate([jnp.zeros((1,), bool), clock[:-1] == 0])
                lam = jnp.where(after_closure[:, None], 1.0, lam)
        a = -jnp.exp(self.a_log)
        scan = selective_scan_reference if reference else selective_scan
        y, carry = scan(
            x_ssm,
            dt,
            a,
            b,
            c,
            lam=lam,
            theta=theta,
            carry=None if state is None else state.scan,
            chunk_size=self.chunk_size,
        )
        y = y.astype(_F32) + self.skip[None, :, None] * x_ssm.astype(_F32)
        gated = rms_norm(y.reshape(time, inner) * jax.nn.silu(z.astype(_F32))).astype(dtype)
        out = gated @ self.w_out.astype(dtype)
        if state is None:
            return out, None
        return out, MixerState(conv=padded[-(taps - 1) :].astype(state.conv.dtype), scan=carry)



class MambaBlock(eqx.Module):
    """A mixer and a gated MLP, each in a pre-norm residual (``gated_mlp``)."""

    mixer: Mamba2Mixer
    mlp: GatedMLP

    def init_state(self) -> MixerState:
        return self.mixer.init_state()

    def __call__(
        self,
        h: Float[Array, "time d_model"],
        state: MixerState | None = None,
        exo: Float[Array, " time"] | None = None,
        *,
        clock: Float[Array, " time"] | None = None,
        reference: bool = False,
    ) -> tuple[Float[Array, "time d_model"], MixerState | None]:
        update, state = self.mixer(rms_norm(h), state, exo, clock=clock, reference=reference)
        h = h + update.astype(h.dtype)
        return h + self.mlp(rms_norm(h)).astype(h.dtype), state


Layer = Mamba2Mixer | MambaBlock | Block


def apply_layer(
    layer: Layer,
    h: Float[Array, "time d_model"],
    state: Any = None,
    exo: Float[Array, " time"] | None = None,
    *,
    clock: Float[Array, " time"] | None = None,
    reference: bool = False,
) -> tuple[Float[Array, "time d_model"], Any]:
    """One layer of a :func:`mamba_layers` stack on the residual stream ``h``: the new stream and state."""
    if isinstance(layer, Block):
        return layer(h, state)
    if isinstance(layer, MambaBlock):
        return layer(h, state, exo, clock=clock, reference=reference)
    update, state = layer(rms_norm(h), state, exo, clock=clock, reference=reference)
    return h + update.astype(h.dtype), state


def mamba_layers(config: MambaConfig, rng: np.random.Generator) -> tuple[Layer, ...]:
    """The layer stack of ``config``: Mamba mixers (each with its gated MLP when ``gated_mlp``), with
    a GPT block (sliding-window attention + MLP) as every ``attention_every``-th layer; shared by
    :class:`Mamba` and the JEPA encoder."""
    layers: list[Layer] = []
    for index in range(config.n_layers):
        if config.is_attention(index):
            attention = Attention(
                config.d_model,
                config.attention_heads,
                config.attention_kv_heads,
                config.context_length,
                dtype=config.dtype,
                key=rng,
            )
            mlp = MLP(config.d_model, config.mlp_ratio * config.d_model, dtype=config.dtype, key=rng)
            layers.append(Block(attention, mlp))
        elif config.gated_mlp:
            mixer = Mamba2Mixer(config, key=rng)
            layers.append(MambaBlock(mixer, GatedMLP(config.d_model, config.mlp_ratio * config.d_model,
                                                     dtype=config.dtype, key=rng)))
        else:
            layers.append(Mamba2Mixer(config, key=rng))
    return tuple(layers)


def initial_layer_states(layers) -> tuple[MixerState | KVMemory, ...]:
    """The state of a stack of mixers and attention blocks before any step (zeros, empty memory)."""
    return tuple(layer.attention.init_memory() if isinstance(layer, Block) else layer.init_state() for layer in layers)

class Mamba(AbstractCodeModel):
    """Mamba-2 language model over codes: embedding, pre-norm residual mixers (and attention
    blocks every ``attention_every`` layers), final norm, untied head."""

    config: MambaConfig = eqx.field(static=True)
    embedding: Float[Array, "vocab d_model"]
    layers: tuple[Layer, ...]
    head: Float[Array, "d_model vocab"]

    def __init__(self, config: MambaConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.config = config
        self.embedding = normal_init(rng, (config.vocab_size, config.d_model), 1.0)
        self.head = normal_init(rng, (config.d_model, config.vocab_size), 0.02)
        self.layers = mamba_layers(config, rng)

    @property
    def uses_exo(self) -> bool:
        return self.config.exo_clock

    def init_state(self) -> tuple[MixerState | KVMemory, ...]:
        return initial_layer_states(self.layers)

    def __call__(
        self,
        codes: Int[Array, " time"],
        *,
        state: tuple[MixerState | KVMemory, ...] | None = None,
        exo: Float[Array, " time"] | None = None,
        reference: bool = False,
    ) -> tuple[Float[Array, "time vocab"], tuple[MixerState | KVMemory, ...] | None]:
        """Logits for the next code at each position; ``reference=True`` swaps in the literal scan."""
        if exo is not None and not self.config.exo_clock:
            raise ValueError("this Mamba has exo_clock=False: it takes no exo input")
        h = self.embedding[codes].astype(jnp.dtype(self.config.dtype))
        states = (None,) * len(self.layers) if state is None else state
        new_state = []
        for layer, layer_state in zip(self.layers, states):
            h, layer_state = apply_layer(layer, h, layer_state, exo, reference=reference)
            new_state.append(layer_state)
        logits = rms_norm(h) @ self.head.astype(h.dtype)
        return logits.astype(_F32), (None if state is None else tuple(new_state))
