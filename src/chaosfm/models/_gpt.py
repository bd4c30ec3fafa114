"""Decoder-only GPT over codes: RoPE, RMSNorm without scale, QK-norm, GQA, ReLU² MLP, no biases.

The recipe is nanochat's ``gpt.py`` (itself modded-nanoGPT's): rotary position embeddings
(Su et al. 2021), RMSNorm with no learnable scale, RMSNorm on queries and keys (QK-norm, Dehghani
et al. 2023), grouped-query attention with ``n_kv_heads`` key/value heads (Ainslie et al. 2023),
a squared-ReLU MLP (So et al. 2021), no bias anywhere, and an output head not tied to the
embedding. Output projections start at zero so every block starts as the identity.

Attention is causal over a sliding window of ``context_length`` codes. A model called with a
:class:`KVMemory` state attends to the last ``context_length - 1`` codes of earlier segments as
well, so streaming a long series segment by segment (truncated BPTT, scoring, generation) gives
every code the same span it had in training. The memory holds keys before the rotation; positions
are re-applied relative to the window on every call, so the span never grows.

Dimension letters: T time, S key positions (memory + T), V vocabulary, D model width,
H query heads, K key/value heads, G = H / K query heads per key/value head, E head dim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.models._base import AbstractCodeModel, init_rng, normal_init, rms_norm

__all__ = ["GPT", "GPT_SIZES", "Attention", "GPTConfig", "KVMemory", "MLP", "rope"]

GPT_SIZES: dict[str, dict[str, int]] = {
    # ~1.0M parameters with a 256-code vocabulary.
    "tiny": {"d_model": 128, "n_layers": 5, "n_heads": 4, "n_kv_heads": 2},
    # ~5M.
    "mini": {"d_model": 256, "n_layers": 6, "n_heads": 4, "n_kv_heads": 2},
    # ~20M.
    "small": {"d_model": 384, "n_layers": 12, "n_heads": 6, "n_kv_heads": 2},
}


@dataclass(frozen=True)
class GPTConfig:
    """Everything that fixes a GPT's shapes and numerics; saved beside the weights."""

    vocab_size: int = 256  # codes the tokenizer emits; the head scores each of them
    context_length: int = 256  # training window and attention span (a sliding window beyond it)
    d_model: int = 128  # residual stream width; parameters grow with its square
    n_layers: int = 5  # depth; each layer is attention + MLP
    n_heads: int = 4  # query heads; head_dim = d_model / n_heads must be even for RoPE
    n_kv_heads: int = 2  # key/value heads (GQA); n_heads / n_kv_heads queries share one
    mlp_ratio: int = 4  # MLP hidden width over d_model, the usual 4x
    rope_base: float = 10000.0  # RoPE wavelength base; 1e4 resolves spans far beyond 256 codes
    dtype: str = "float32"  # activation dtype ("bfloat16" on accelerators); params stay float32

    def __post_init__(self) -> None:
        problems = []
        if self.vocab_size < 2:
            problems.append(("vocab_size", "must be at least 2"))
        if self.context_length < 1:
            problems.append(("context_length", "must be positive"))
        if self.n_heads < 1 or self.d_model % self.n_heads:
            problems.append(("n_heads", f"must divide d_model={self.d_model}"))
        elif (self.d_model // self.n_heads) % 2:
            problems.append(("n_heads", "d_model / n_heads (the head dim) must be even for RoPE"))
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            problems.append(("n_kv_heads", f"must divide n_heads={self.n_heads}"))
        if self.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(("dtype", "must be float32, bfloat16 or float16"))
        if problems:
            raise ValueError("; ".join(f"{key}: {rule}" for key, rule in problems))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> "GPTConfig":
        """A preset from :data:`GPT_SIZES` with ``overrides`` on top (``vocab_size`` etc.)."""
        if size not in GPT_SIZES:
            raise ValueError(f"size: unknown GPT size {size!r}; known: {sorted(GPT_SIZES)}")
        return cls(**{**GPT_SIZES[size], **overrides})

    def replace(self, **changes: Any) -> "GPTConfig":
        return dataclasses.replace(self, **changes)


class KVMemory(NamedTuple):
    """Keys (before rotation) and values of the last ``M`` codes; the first ``M - length`` are empty."""

    keys: Float[Array, "memory kv_heads head_dim"]
    values: Float[Array, "memory kv_heads head_dim"]
    length: Int[Array, ""]


def rope(x: Float[Array, "time heads head_dim"], positions: Float[Array, " time"], base: float) -> Array:
    """Rotary position embedding (Su et al. 2021, eq. 34), rotating the two halves of the head dim."""
    half = x.shape[-1] // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * frequencies[None, :]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x.dtype)


# Attention processes queries in blocks of at least 64 (smaller blocks cost more per op than they
# skip on a CPU) and at most 8 blocks (compile time grows with their number).
_QUERY_BLOCK = 64
_MAX_QUERY_BLOCKS = 8


@jax.custom_vjp
def _masked_softmax(scores: Float[Array, "... time keys"], visible: Array) -> Float[Array, "... time keys"]:
    """Softmax over the last axis of ``scores`` where ``visible`` (a boolean mask broadcast against
    them), exactly 0 elsewhere; every row must see at least one key.

    The backward is the closed form ``y * (g - sum(g * y))`` from the saved output ``y``: one pass
    over the (time, keys) tensors, where differentiating ``exp(s) / sum(exp(s))`` through the
    quotient rule keeps ``exp(s)`` as well and makes several passes.
    """
    return jax.nn.softmax(jnp.where(visible, scores, jnp.finfo(scores.dtype).min), axis=-1)


def _masked_softmax_forward(scores: Array, visible: Array) -> tuple[Array, Array]:
    weights = _masked_softmax(scores, visible)
    return weights, weights


def _masked_softmax_backward(weights: Array, grad: Array) -> tuple[Array, None]:
    # Masked entries have weight exactly 0, so their gradient is 0 as the where's would be.
    return weights * (grad - jnp.sum(grad * weights, axis=-1, keepdims=True)), None


_masked_softmax.defvjp(_masked_softmax_forward, _masked_softmax_backward)


class Attention(eqx.Module):
    """Causal sliding-window attention with RoPE, QK-norm and grouped key/value heads."""

    w_q: Float[Array, "d_model q_dim"]
    w_k: Float[Array, "d_model kv_dim"]
    w_v: Float[Array, "d_model kv_dim"]
    w_o: Float[Array, "q_dim d_model"]
    n_heads: int = eqx.field(static=True)
    n_kv_heads: int = eqx.field(static=True)
    window: int = eqx.field(static=True)
    rope_base: float = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        window: int,
        *,
        rope_base: float = 10000.0,
        dtype: str = "float32",
        key: PRNGKeyArray | np.random.Generator,
    ):
        head_dim = d_model // n_heads
        rng = init_rng(key)
        std = d_model**-0.5
        self.w_q = normal_init(rng, (d_model, n_heads * head_dim), std)
        self.w_k = normal_init(rng, (d_model, n_kv_heads * head_dim), std)
        self.w_v = normal_init(rng, (d_model, n_kv_heads * head_dim), std)
        self.w_o = jnp.zeros((n_heads * head_dim, d_model), jnp.float32)
        self.n_heads, self.n_kv_heads, self.window = n_heads, n_kv_heads, window
        self.rope_base, self.dtype = rope_base, dtype

    @property
    def head_dim(self) -> int:
        return self.w_q.shape[1] // self.n_heads

    def init_memory(self) -> KVMemory:
        """An empty memory of ``window - 1`` positions."""
        shape = (max(self.window - 1, 1), self.n_kv_heads, self.head_dim)
        empty = jnp.zeros(shape, jnp.dtype(self.dtype))
        return KVMemory(empty, empty, jnp.zeros((), jnp.int32))

    def __call__(
        self, x: Float[Array, "time d_model"], memory: KVMemory | None = None
    ) -> tuple[Float[Array, "time d_model"], KVMemory | None]:
        dtype = jnp.dtype(self.dtype)
        time = x.shape[0]
        heads, kv_heads, head_dim = self.n_heads, self.n_kv_heads, self.head_dim
        x = x.astype(dtype)
        # One matmul for queries, keys and values: one pass over x, one x-gradient in the backward.
        w_qkv = jnp.concatenate([self.w_q, self.w_k, self.w_v], axis=1).astype(dtype)
        q, k, v = jnp.split(x @ w_qkv, [heads * head_dim, (heads + kv_heads) * head_dim], axis=1)
        # (time, heads, head_dim); QK-norm commutes with the rotation, so memory keeps normed keys.
        q = rms_norm(q.reshape(time, heads, head_dim))
        k = rms_norm(k.reshape(time, kv_heads, head_dim))
        v = v.reshape(time, kv_heads, head_dim)
        if memory is None:
            keys, values, offset, first_valid = k, v, 0, jnp.zeros((), jnp.int32)
        else:
            keys = jnp.concatenate([memory.keys.astype(dtype), k])
            values = jnp.concatenate([memory.values.astype(dtype), v])
            offset = memory.keys.shape[0]
            first_valid = offset - memory.length
        key_positions = jnp.arange(keys.shape[0])
        query_positions = offset + jnp.arange(time)
        # Head-major operands, so both attention matmuls are plain batched matmuls over (kv_heads,)
        # whose outputs need no transpose: only the (time, head_dim)-sized operands are moved, never
        # the (time, time)-sized scores. The 1/sqrt(E) scale goes on q, not on the scores.
        q = rope(q, query_positions, self.rope_base) * jnp.asarray(head_dim**-0.5, dtype)
        q = q.reshape(time, kv_heads, heads // kv_heads, head_dim).transpose(1, 2, 0, 3)  # (K, G, T, E)
        rotated_keys = rope(keys, key_positions, self.rope_base).transpose(1, 0, 2)  # (K, S, E)
        values_by_head = values.transpose(1, 0, 2)  # (K, S, E)
        lag = query_positions[:, None] - key_positions[None, :]
        visible = (lag >= 0) & (lag < self.window) & (key_positions[None, :] >= first_valid)
        # Queries in blocks, each scored only against the keys its window can reach (positions are
        # static), so the causal triangle above the diagonal is never computed: 5/8 of the (T, S)
        # scores at time 256. Skipped scores are masked ones: the result is that of one softmax.
        block = max(_QUERY_BLOCK, -(-time // _MAX_QUERY_BLOCKS))
        outs = []
        for start in range(0, time, block):
            stop = min(start + block, time)
            first, last = max(0, offset + start - self.window + 1), offset + stop  # keys [first, last)
            scores = jnp.einsum(
                "kgtd,ksd->kgts", q[:, :, start:stop], rotated_keys[:, first:last],
                preferred_element_type=jnp.float32,
            )
            weights = _masked_softmax(scores, visible[None, None, start:stop, first:last]).astype(dtype)
            outs.append(jnp.einsum(
                "kgts,ksd->kgtd", weights, values_by_head[:, first:last], preferred_element_type=jnp.float32
            ))
        out = jnp.concatenate(outs, axis=2).transpose(2, 0, 1, 3)  # (T, K, G, E)
        out = out.astype(dtype).reshape(time, heads * head_dim) @ self.w_o.astype(dtype)
        if memory is None:
            return out, None
        size = memory.keys.shape[0]
        new_memory = KVMemory(
            keys[-size:].astype(memory.keys.dtype),
            values[-size:].astype(memory.values.dtype),
            jnp.minimum(memory.length + time, size).astype(jnp.int32),
        )
        return out, new_memory


class MLP(eqx.Module):
    """``relu(x W_in)² W_out`` (So et al. 2021, "Primer"), no biases."""

    w_in: Float[Array, "d_model hidden"]
    w_out: Float[Array, "hidden d_model"]
    dtype: str = eqx.field(static=True)

    def __init__(
        self, d_model: int, hidden: int, *, dtype: str = "float32", key: PRNGKeyArray | np.random.Generator
    ):
        self.w_in = normal_init(init_rng(key), (d_model, hidden), d_model**-0.5)
        self.w_out = jnp.zeros((hidden, d_model), jnp.float32)
        self.dtype = dtype

    def __call__(self, x: Float[Array, "time d_model"]) -> Float[Array, "time d_model"]:
        dtype = jnp.dtype(self.dtype)
        hidden = jax.nn.relu(x.astype(dtype) @ self.w_in.astype(dtype))
        return (hidden * hidden) @ self.w_out.astype(dtype)


class GatedMLP(eqx.Module):
    """``(silu(x W_gate) * x W_up) W_down`` (SwiGLU, Shazeer 2020), no biases; ``W_down`` starts at 0."""

    w_gate: Float[Array, "d_model hidden"]
    w_up: Float[Array, "d_model hidden"]
    w_down: Float[Array, "hidden d_model"]
    dtype: str = eqx.field(static=True)

    def __init__(
        self, d_model: int, hidden: int, *, dtype: str = "float32", key: PRNGKeyArray | np.random.Generator
    ):
        rng = init_rng(key)
        self.w_gate = normal_init(rng, (d_model, hidden), d_model**-0.5)
        self.w_up = normal_init(rng, (d_model, hidden), d_model**-0.5)
        self.w_down = jnp.zeros((hidden, d_model), jnp.float32)
        self.dtype = dtype

    def __call__(self, x: Float[Array, "time d_model"]) -> Float[Array, "time d_model"]:
        dtype = jnp.dtype(self.dtype)
        x = x.astype(dtype)
        hidden = jax.nn.silu(x @ self.w_gate.astype(dtype)) * (x @ self.w_up.astype(dtype))
        return hidden @ self.w_down.astype(dtype)


class Block(eqx.Module):
    """Pre-norm residual block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    attention: Attention
    mlp: MLP

    def __call__(
        self, x: Float[Array, "time d_model"], memory: KVMemory | None
    ) -> tuple[Float[Array, "time d_model"], KVMemory | None]:
        update, memory = self.attention(rms_norm(x), memory)
        x = x + update.astype(x.dtype)
        x = x + self.mlp(rms_norm(x)).astype(x.dtype)
        return x, memory


class GPT(AbstractCodeModel):
    """Decoder-only transformer over codes (see the module docstring for the recipe)."""

    config: GPTConfig = eqx.field(static=True)
    embedding: Float[Array, "vocab d_model"]
    blocks: tuple[Block, ...]
    head: Float[Array, "d_model vocab"]

    def __init__(self, config: GPTConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.config = config
        self.embedding = normal_init(rng, (config.vocab_size, config.d_model), 1.0)
        self.head = normal_init(rng, (config.d_model, config.vocab_size), 0.02)
        blocks = []
        for _ in range(config.n_layers):
            attention = Attention(
                config.d_model,
                config.n_heads,
                config.n_kv_heads,
                config.context_length,
                rope_base=config.rope_base,
                dtype=config.dtype,
                key=rng,
            )
            mlp = MLP(config.d_model, config.mlp_ratio * config.d_model, dtype=config.dtype, key=rng)
            blocks.append(Block(attention, mlp))
        self.blocks = tuple(blocks)

    def init_state(self) -> tuple[KVMemory, ...]:
        return tuple(block.attention.init_memory() for block in self.blocks)

    def __call__(
        self,
        codes: Int[Array, " time"],
        *,
        state: tuple[KVMemory, ...] | None = None,
        exo: Float[Array, " time"] | None = None,
    ) -> tuple[Float[Array, "time vocab"], tuple[KVMemory, ...] | None]:
        if exo is not None:
            raise ValueError("GPT takes no exogenous input (exo); only Mamba with exo_clock=True does")
        h = self.embedding[codes].astype(jnp.dtype(self.config.dtype))
        memories = (None,) * len(self.blocks) if state is None else state
        new_state = []
        for block, memory in zip(self.blocks, memories):
            h, memory = block(h, memory)
            new_state.append(memory)
        logits = rms_norm(h) @ self.head.astype(h.dtype)
        return logits.astype(jnp.float32), (None if state is None else tuple(new_state))
