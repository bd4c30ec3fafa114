"""The causal CNN: the fast convolution agrees with lax.conv, and outputs never see the future."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.tokenizers import CausalConv, CausalStack, Decoder, Encoder, causal_conv_reference
from chaosfm.tokenizers._cnn import receptive_field


@pytest.mark.parametrize("taps,dilation", [(1, 1), (2, 1), (3, 2), (3, 8), (5, 3)])
def test_causal_conv_matches_lax_conv(key, taps, dilation):
    conv_key, x_key = jax.random.split(key)
    conv = CausalConv(3, 5, taps, dilation, key=conv_key)
    conv = eqx.tree_at(lambda c: c.bias, conv, jnp.arange(5.0))  # a nonzero bias too
    x = jax.random.normal(x_key, (40, 3))
    with jax.default_matmul_precision("highest"):
        fast = eqx.filter_jit(lambda c, v: c(v))(conv, x)
    slow = eqx.filter_jit(causal_conv_reference)(conv, x)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_stack_is_causal_with_the_stated_receptive_field(key):
    stack_key, x_key = jax.random.split(key)
    stack = CausalStack(2, 3, width=6, taps=3, dilations=(1, 2, 4), key=stack_key)
    field = receptive_field(3, (1, 2, 4))
    assert stack.receptive_field == field == 15
    x = jax.random.normal(x_key, (60, 2))
    run = eqx.filter_jit(lambda s, v: s(v))
    base = run(stack, x)
    t = 40
    bumped = run(stack, x.at[t].add(10.0))
    # Outputs before t are untouched; t .. t + field - 1 move; later ones do not.
    np.testing.assert_array_equal(base[:t], bumped[:t])
    moved = np.abs(np.asarray(bumped - base)).max(axis=1) > 0
    assert moved[t] and moved[t + field - 1]
    assert not moved[t + field :].any()


def test_encoder_patches_and_decoder_shapes(key):
    enc_key, dec_key, x_key = jax.random.split(key, 3)
    encoder = Encoder(4, 2, width=6, taps=3, dilations=(1, 2), patch=4, key=enc_key)
    decoder = Decoder(2, 4, width=6, taps=3, dilations=(1, 2), patch=4, key=dec_key)
    x = jax.random.normal(x_key, (32, 4))

    @eqx.filter_jit
    def run(encoder, decoder, x):
        z = encoder(x)
        return z, decoder(z), encoder(x.at[13].add(5.0))

    z, decoded, bumped = run(encoder, decoder, x)
    assert z.shape == (8, 2)
    assert decoded.shape == (32, 4)
    # Latent j sees candles <= 4j + 3 only.
    np.testing.assert_array_equal(z[:3], bumped[:3])
    assert not np.allclose(z[3], bumped[3])
