"""GPT: causality, GQA against written-out multi-head attention, streaming state, sizes, configs."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import GPT, Attention, GPTConfig, count_params, rms_norm, rope

from ._helpers import max_error, perturb

CONFIG = GPTConfig(vocab_size=11, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2)


@pytest.fixture(scope="module")
def model():
    return perturb(GPT(CONFIG, key=jax.random.key(1)))


def test_changing_a_later_code_never_changes_earlier_logits(model):
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 11, 12), jnp.int32)

    @jax.jit
    def logits_after_change(model, codes):
        # Row 0 is the original; row t + 1 changes code t. One batch, so one arithmetic path.
        variants = jnp.stack([codes] + [codes.at[t].set((codes[t] + 1) % 11) for t in range(codes.size)])
        logits = jax.vmap(lambda c: model(c)[0])(variants)
        return logits[0], logits[1:]

    base, changed = logits_after_change(model, codes)
    for t in range(codes.size):
        np.testing.assert_array_equal(changed[t, :t], base[:t])  # positions before t: untouched
        assert np.max(np.abs(changed[t, t:] - base[t:])) > 1e-4  # and the change does reach t


def _written_out_mha(attention, x):
    """Multi-head attention the textbook way, one head at a time, for comparison."""
    time, heads, head_dim = x.shape[0], attention.n_heads, attention.head_dim
    kv_heads = attention.n_kv_heads
    q = rms_norm((x @ attention.w_q).reshape(time, heads, head_dim))
    k = rms_norm((x @ attention.w_k).reshape(time, kv_heads, head_dim))
    v = (x @ attention.w_v).reshape(time, kv_heads, head_dim)
    positions = jnp.arange(time)
    q, k = rope(q, positions, attention.rope_base), rope(k, positions, attention.rope_base)
    outs = []
    for h in range(heads):
        g = h // (heads // kv_heads)
        scores = q[:, h] @ k[:, g].T / math.sqrt(head_dim)
        scores = jnp.where(jnp.tril(jnp.ones((time, time), bool)), scores, -jnp.inf)
        outs.append(jax.nn.softmax(scores, axis=-1) @ v[:, g])
    return jnp.concatenate(outs, axis=-1) @ attention.w_o


def test_gqa_equals_multi_head_attention(model):
    # n_kv_heads == n_heads is plain MHA; n_kv_heads < n_heads must equal MHA whose key/value
    # weights are tied (repeated) across each group of query heads.
    x = jax.random.normal(jax.random.key(2), (10, 32))
    mha = perturb(Attention(32, 4, 4, window=16, key=jax.random.key(3)), seed=3)
    gqa = perturb(Attention(32, 4, 2, window=16, key=jax.random.key(4)), seed=4)
    head_dim = 8
    tile = lambda w: jnp.repeat(w.reshape(32, 2, head_dim), 2, axis=1).reshape(32, 4 * head_dim)  # noqa: E731
    tied = eqx.tree_at(
        lambda a: (a.w_q, a.w_k, a.w_v, a.w_o), mha, (gqa.w_q, tile(gqa.w_k), tile(gqa.w_v), gqa.w_o)
    )

    @jax.jit
    def outputs(mha, gqa, tied, x):
        return mha(x)[0], _written_out_mha(mha, x), gqa(x)[0], tied(x)[0], _written_out_mha(gqa, x)

    mha_out, mha_ref, gqa_out, tied_out, gqa_ref = outputs(mha, gqa, tied, x)
    assert max_error(mha_out, mha_ref) <= 1e-5
    assert max_error(gqa_out, tied_out) <= 1e-5
    assert max_error(gqa_out, gqa_ref) <= 1e-5


def test_streaming_with_memory_matches_one_call(model):
    # 40 codes with a 16-code window: one call uses the sliding-window mask; streaming in pieces
    # of 5 carries the key/value memory. Both must give every code the same 16-code span.
    codes = jnp.asarray(np.random.default_rng(1).integers(0, 11, 40), jnp.int32)

    @jax.jit
    def both(model, codes):
        def piece(state, chunk):
            logits, state = model(chunk, state=state)
            return state, logits

        _, pieces = jax.lax.scan(piece, model.init_state(), codes.reshape(8, 5))
        return model(codes)[0], pieces.reshape(40, -1)

    whole, streamed = both(model, codes)
    assert max_error(streamed, whole) <= 1e-5
    # The window bites: with 2 layers of 15-code look-back, code 5 reaches up to position 35 only.
    changed = codes.at[5].set((codes[5] + 1) % 11)
    after = jax.jit(lambda m, c: m(c)[0])(model, changed)
    assert np.max(np.abs(after[35] - whole[35])) > 1e-6
    np.testing.assert_allclose(after[36:], whole[36:], atol=1e-6)


def test_bfloat16_activations_give_finite_float32_logits(model):
    bf16 = GPT(CONFIG.replace(dtype="bfloat16"), key=jax.random.key(1))
    logits, _ = eqx.filter_jit(lambda m, c: m(c))(bf16, jnp.arange(12, dtype=jnp.int32) % 11)
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_sizes_span_one_to_twenty_million_parameters():
    tiny = count_params(GPT(GPTConfig.from_size("tiny", vocab_size=256), key=jax.random.key(0)))
    small = count_params(GPT(GPTConfig.from_size("small", vocab_size=256), key=jax.random.key(0)))
    assert 0.8e6 <= tiny <= 1.3e6
    assert 17e6 <= small <= 23e6


def test_model_has_no_bias_and_no_norm_scale(model):
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(model)[0]]
    assert not any("bias" in n or "scale" in n or "gamma" in n for n in names)
    assert model.head is not model.embedding and model.head.shape == (32, 11)  # untied head


@pytest.mark.parametrize(
    "changes, key",
    [({"n_heads": 5}, "n_heads"), ({"n_kv_heads": 3}, "n_kv_heads"), ({"dtype": "int8"}, "dtype")],
)
def test_config_errors_name_the_field(changes, key):
    with pytest.raises(ValueError, match=key):
        GPTConfig(**{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, **changes})


def test_same_key_gives_same_weights_and_exo_is_refused():
    a, b = GPT(CONFIG, key=jax.random.key(7)), GPT(CONFIG, key=jax.random.key(7))
    assert max_error(a, b) == 0.0
    with pytest.raises(ValueError, match="exo"):
        a(jnp.zeros(3, jnp.int32), exo=jnp.zeros(3))


def _written_out_attention(attention, x, memory):
    """Attention over ``memory`` then ``x`` the textbook way: keys and values concatenated, one
    (query, key) mask from the positions, plain ``jax.nn.softmax`` (autodiff's own backward)."""
    time, heads, kv_heads, head_dim = x.shape[0], attention.n_heads, attention.n_kv_heads, attention.head_dim
    q = rms_norm((x @ attention.w_q).reshape(time, heads, head_dim))
    k = rms_norm((x @ attention.w_k).reshape(time, kv_heads, head_dim))
    v = (x @ attention.w_v).reshape(time, kv_heads, head_dim)
    keys, values = jnp.concatenate([memory.keys, k]), jnp.concatenate([memory.values, v])
    size = memory.keys.shape[0]
    key_positions, query_positions = jnp.arange(size + time), size + jnp.arange(time)
    q, keys = rope(q, query_positions, attention.rope_base), rope(keys, key_positions, attention.rope_base)
    lag = query_positions[:, None] - key_positions[None, :]
    visible = (lag >= 0) & (lag < attention.window) & (key_positions[None, :] >= size - memory.length)
    outs = []
    for h in range(heads):
        g = h // (heads // kv_heads)
        scores = jnp.where(visible, q[:, h] @ keys[:, g].T / math.sqrt(head_dim), -jnp.inf)
        outs.append(jax.nn.softmax(scores, axis=-1) @ values[:, g])
    return jnp.concatenate(outs, axis=-1) @ attention.w_o


@pytest.mark.parametrize("window, time, remembered", [(8, 6, 0), (8, 6, 3), (8, 6, 7), (100, 150, 40)])
def test_attention_gradients_match_written_out_attention(window, time, remembered):
    # The attention's softmax has a hand-written backward and its queries go in blocks of 64 that
    # skip keys out of reach; outputs and gradients (weights, input, memory) must be autodiff's
    # through the textbook formula, with and without earlier codes in memory, in one block or three.
    attention = perturb(Attention(32, 4, 2, window=window, key=jax.random.key(5)), seed=5)
    keys = jax.random.split(jax.random.key(6), 4)
    x = jax.random.normal(keys[0], (time, 32))
    probe = jax.random.normal(keys[1], (time, 32))
    empty = attention.init_memory()
    memory = empty._replace(
        keys=rms_norm(jax.random.normal(keys[2], empty.keys.shape)),
        values=jax.random.normal(keys[3], empty.values.shape),
        length=jnp.asarray(remembered, jnp.int32),
    )

    @jax.jit
    def gradients(attention, x, memory):
        def fast(attention, x, keys, values):
            out, _ = attention(x, memory._replace(keys=keys, values=values))
            return jnp.sum(out * probe)

        def reference(attention, x, keys, values):
            out = _written_out_attention(attention, x, memory._replace(keys=keys, values=values))
            return jnp.sum(out * probe)

        args = (attention, x, memory.keys, memory.values)
        outputs = attention(x, memory)[0], _written_out_attention(attention, x, memory)
        every = (0, 1, 2, 3)
        return outputs, jax.grad(fast, argnums=every)(*args), jax.grad(reference, argnums=every)(*args)

    (out, expected), fast, reference = gradients(attention, x, memory)
    assert max_error(out, expected) <= 1e-5
    assert max_error(fast, reference) <= 1e-5
    # Masked memory rows (before the first remembered one) get exactly zero gradient.
    unseen = memory.keys.shape[0] - remembered
    assert np.all(np.asarray(fast[2][:unseen]) == 0) and np.all(np.asarray(fast[3][:unseen]) == 0)
    if remembered:
        assert np.max(np.abs(np.asarray(fast[2][unseen:]))) > 1e-6


@pytest.mark.parametrize("window, time", [(16, 10), (300, 200), (50, 200)])
def test_attention_gradients_without_memory_match_written_out_attention(window, time):
    # Without memory: one block, four blocks of the causal triangle, four blocks of a window of 50.
    attention = perturb(Attention(32, 4, 2, window=window, key=jax.random.key(8)), seed=8)
    x = jax.random.normal(jax.random.key(9), (time, 32))
    probe = jax.random.normal(jax.random.key(10), (time, 32))
    empty = attention.init_memory()  # length 0: the reference then masks exactly as no memory does

    @jax.jit
    def gradients(attention, x):
        fast = jax.grad(lambda a, x: jnp.sum(a(x)[0] * probe), argnums=(0, 1))(attention, x)
        reference = jax.grad(
            lambda a, x: jnp.sum(_written_out_attention(a, x, empty) * probe), argnums=(0, 1)
        )(attention, x)
        return attention(x)[0], _written_out_attention(attention, x, empty), fast, reference

    out, expected, fast, reference = gradients(attention, x)
    assert max_error(out, expected) <= 1e-5
    assert max_error(fast, reference) <= 1e-5
