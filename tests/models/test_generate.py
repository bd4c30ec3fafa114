"""generate(): greedy decoding through the carried state equals recomputing from scratch; sampling."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import GPT, GPTConfig, Mamba, MambaConfig, generate, sample_logits

from ._helpers import perturb

GPT_CONFIG = GPTConfig(vocab_size=7, context_length=8, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1)
MAMBA_CONFIG = MambaConfig(
    vocab_size=7,
    context_length=8,
    d_model=16,
    n_layers=2,
    d_state=4,
    head_dim=8,
    chunk_size=4,
    trapezoidal=True,
    complex_phase=True,
)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(perturb(GPT(GPT_CONFIG, key=jax.random.key(0)), scale=1.0), id="gpt"),
        pytest.param(
            perturb(Mamba(MAMBA_CONFIG, key=jax.random.key(0)), scale=1.0), id="mamba", marks=pytest.mark.slow
        ),
    ],
)
def test_greedy_generation_equals_argmax_of_a_full_recompute(model):
    # 12 generated after 5 prompt codes: past the GPT's 8-code window, so its memory slides.
    prompt = jnp.asarray([1, 4, 2, 6, 3], jnp.int32)
    generated = generate(model, prompt, 12, temperature=0.0)
    assert generated.shape == (12,) and generated.dtype == jnp.int32
    full = jnp.concatenate([prompt, generated])
    logits = eqx.filter_jit(lambda m, c: m(c)[0])(model, full)
    np.testing.assert_array_equal(np.argmax(logits[4:-1], axis=-1), generated)


def test_top_one_sampling_is_greedy():
    # Same model structure, prompt length and n as above: the greedy program is compiled once.
    model = perturb(GPT(GPT_CONFIG, key=jax.random.key(0)), scale=1.0)
    prompt = jnp.asarray([1, 4, 2, 6, 3], jnp.int32)
    greedy = generate(model, prompt, 12, temperature=0.0)
    top_one = generate(model, prompt, 12, temperature=1.0, top_k=1, key=jax.random.key(5))
    np.testing.assert_array_equal(top_one, greedy)


def test_top_k_draws_only_among_the_k_best():
    logits = jnp.asarray([0.0, 3.0, 1.0, 2.5, -1.0])
    draws = jax.vmap(lambda k: sample_logits(logits, temperature=5.0, top_k=2, key=k))(
        jax.random.split(jax.random.key(0), 200)
    )
    assert set(np.unique(draws)) == {1, 3}
    assert int(sample_logits(logits, temperature=0.0, top_k=None, key=None)) == 1


def test_stochastic_generation_needs_a_key_and_valid_arguments():
    model = GPT(GPT_CONFIG, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        generate(model, jnp.asarray([1], jnp.int32), 3, temperature=1.0)
    with pytest.raises(ValueError, match="prompt"):
        generate(model, jnp.zeros(0, jnp.int32), 3, temperature=0.0)
    with pytest.raises(ValueError, match="exo"):
        generate(Mamba(MAMBA_CONFIG.replace(exo_clock=True), key=jax.random.key(0)), jnp.asarray([1]), 2, 0.0)


def test_num_samples_draws_the_paths_of_the_split_keys():
    model = perturb(GPT(GPT_CONFIG, key=jax.random.key(0)), scale=1.0)
    prompt = jnp.asarray([1, 4, 2], jnp.int32)
    key = jax.random.key(7)
    many = generate(model, prompt, 6, temperature=1.0, key=key, num_samples=5)
    assert many.shape == (5, 6)
    one_by_one = [generate(model, prompt, 6, temperature=1.0, key=k) for k in jax.random.split(key, 5)]
    np.testing.assert_array_equal(np.asarray(many), np.stack([np.asarray(p) for p in one_by_one]))
    assert len({tuple(np.asarray(p)) for p in many}) > 1  # independent draws, not one path repeated
    with pytest.raises(ValueError, match="num_samples"):
        generate(model, prompt, 6, temperature=1.0, key=key, num_samples=0)
