"""Sampling code paths from a code model: a prefill, then one code at a time with the carried state.

The prompt goes through the model once with a fresh state (the GPT's key/value memory, the
Mamba's SSM and conv states); each new code then costs one length-1 call that reads and updates
that state, so nothing before it is recomputed. Sampling is temperature-scaled, optionally
restricted to the ``top_k`` most likely codes; temperature 0 is greedy (argmax).

Dimension letters: T prompt length, V vocabulary, n generated codes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.models._base import AbstractCodeModel

__all__ = ["generate", "sample_logits"]


def sample_logits(
    logits: Float[Array, " vocab"],
    *,
    temperature: float,
    top_k: int | None,
    key: PRNGKeyArray | None,
) -> Int[Array, ""]:
    """One code from ``logits``: argmax when ``temperature == 0``, else a tempered, top-k draw."""
    if temperature == 0:
        return jnp.argmax(logits).astype(jnp.int32)
    if key is None:
        raise ValueError("sampling with temperature > 0 is stochastic: pass key=jax.random.key(seed)")
    scaled = logits.astype(jnp.float32) / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = jax.lax.top_k(scaled, top_k)[0][-1]
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    return jax.random.categorical(key, scaled).astype(jnp.int32)


@eqx.filter_jit
def _generate(model, prompt, exo, key, n, temperature, top_k):
    state = model.init_state()
    exo_kw = {} if exo is None else {"exo": exo}
    logits, state = model(prompt, state=state, **exo_kw)
    # Future exogenous values are unknown: the last observed one is held.
    held = None if exo is None else exo[-1:]

    def step(carry, step_key):
        last_logits, state = carry
        code = sample_logits(last_logits, temperature=temperature, top_k=top_k, key=step_key)
        kw = {} if held is None else {"exo": held}
        next_logits, state = model(code[None], state=state, **kw)
        return (next_logits[0], state), code

    keys = jax.random.split(key, n)
    _, codes = jax.lax.scan(step, (logits[-1], state), keys)
    return codes


def generate(
    model: AbstractCodeModel,
    prompt_codes: Int[Array, " time"],
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    *,
    key: PRNGKeyArray | None = None,
    exo: Float[Array, " time"] | None = None,
    num_samples: int | None = None,
) -> Int[Array, "*samples n"]:
    """Sample ``n`` codes that follow ``prompt_codes`` (``num_samples`` paths of them if given).

    Args:
        model: a trained code model (GPT or Mamba).
        prompt_codes: the codes to continue, oldest first (at least one).
        n: how many codes to generate.
        temperature: softmax temperature; 0 is greedy decoding (then ``key`` may be omitted).
        top_k: sample only among the ``top_k`` most likely codes (None: all).
        key: PRNG key; required when ``temperature > 0``.
        exo: the exogenous series over the prompt, for a model with ``exo_clock``; its last value
            is held over the generated codes.
        num_samples: draw this many independent paths in one compiled call (keys split from
            ``key``); None draws one path.

    Returns:
        ``(n,)`` int32 codes, or ``(num_samples, n)``. Batch prompts with ``jax.vmap``.
    """
    prompt = jnp.asarray(prompt_codes, jnp.int32)
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(f"prompt_codes must be a non-empty 1-D array of codes; got shape {prompt.shape}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if model.uses_exo and exo is None:
        raise ValueError("this model has exo_clock=True: pass exo over the prompt")
    if temperature > 0 and key is None:
        raise ValueError("sampling with temperature > 0 is stochastic: pass key=jax.random.key(seed)")
    if key is None:
        key = jax.random.key(0)  # unused by greedy decoding; keeps one traced signature
    exo_array = None if exo is None else jnp.asarray(exo, jnp.float32)
    if num_samples is None:
        return _generate(model, prompt, exo_array, key, int(n), float(temperature), top_k)
    keys = jax.random.split(key, num_samples)
    return _generate_many(model, prompt, exo_array, keys, int(n), float(temperature), top_k)


@eqx.filter_jit
def _generate_many(model, prompt, exo, keys, n, temperature, top_k):
    # One compiled program for all paths: vmapping outside jit would re-trace on every call.
    return jax.vmap(lambda key: _generate(model, prompt, exo, key, n, temperature, top_k))(keys)
