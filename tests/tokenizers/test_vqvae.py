"""VQ-VAE: EMA updates, dead-code restarts, usage with and without them, files and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import LeakageError, TimeFence
from chaosfm.tokenizers import EMACodebook, VQVAEConfig, VQVAETokenizer, codebook_usage, code_counts, load_tokenizer

from ._data import TINY

TINY_VQ = dict(codebook_size=32, latent_dim=3, restart_every=5, **TINY)


def book(restarts=True, decay=0.5):
    return EMACodebook(4, 2, decay=decay, commitment=0.25, restarts=restarts, restart_every=5,
                       restart_threshold=0.75, key=jax.random.key(0))


@pytest.fixture(scope="module")
def fitted(candles):
    return VQVAETokenizer(**TINY_VQ).fit(candles, key=jax.random.key(0), steps=100)


def test_ema_update_follows_the_formula():
    start = book(restarts=False)
    z = jnp.asarray(np.asarray(start.codebook)[[0, 0, 2]] + 0.1)
    codes = start.encode(z)
    np.testing.assert_array_equal(codes, [0, 0, 2])
    after = eqx.filter_jit(lambda b, z, c: b.update(z, c, picks=jnp.zeros((0,), jnp.int32), step=5))(start, z, codes)
    counts = np.array([2.0, 0, 1, 0])
    cluster = 0.5 * 1.0 + 0.5 * counts
    sums = 0.5 * np.asarray(start.codebook) + 0.5 * np.stack(
        [np.asarray(z[:2]).sum(0), np.zeros(2), np.asarray(z[2]), np.zeros(2)]
    )
    total = cluster.sum()
    smoothed = (cluster + 1e-5) / (total + 4e-5) * total
    np.testing.assert_allclose(after.cluster_size, cluster, rtol=1e-6)
    np.testing.assert_allclose(after.codebook, sums / smoothed[:, None], rtol=1e-5)
    assert int(after.restarted) == 0


def test_dead_entries_restart_onto_recent_latents_on_schedule():
    start = book()
    z = jnp.asarray(np.asarray(start.codebook)[[0, 0, 0]] + np.array([[0.0, 0.0], [0.01, 0], [0, 0.01]]))
    codes = start.encode(z)
    picks = jnp.array([2, 0, 1], jnp.int32)
    update = eqx.filter_jit(lambda b, step: b.update(z, codes, picks=picks, step=step))
    early = update(start, jnp.asarray(3))
    assert int(early.restarted) == 0  # not a restart step
    after = update(start, jnp.asarray(5))
    # Entries 1, 2, 3 got no latents: their EMA count fell from 1 to 0.5, below the threshold
    # 0.75, so each moved onto z[picks[k % 3]] and its count was reset to 1; entry 0 stayed.
    assert int(after.restarted) == 3
    for k in (1, 2, 3):
        np.testing.assert_array_equal(after.codebook[k], z[picks[k % 3]])
    np.testing.assert_array_equal(after.cluster_size[1:], 1.0)
    assert not np.allclose(after.codebook[0], z[picks[0]])


@pytest.mark.slow  # a second compiled training step; bench/tokenizers.py shows the real numbers
def test_restarts_raise_codebook_usage(candles, fitted):
    without = VQVAETokenizer(**{**TINY_VQ, "restarts": False}).fit(candles, key=jax.random.key(0), steps=100)
    usage = {
        name: codebook_usage(code_counts(tokenizer.encode(candles), 32))
        for name, tokenizer in (("with", fitted), ("without", without))
    }
    assert fitted.restarts_done > 0 and without.restarts_done == 0
    assert usage["with"] > usage["without"]


def test_round_trip_determinism_and_save_load(candles, fitted, tmp_path):
    codes = fitted.encode(candles)
    assert codes.dtype == np.int32 and codes.shape == (len(candles),) and codes.max() < 32
    assert fitted.decode(codes[:300]).shape == (300, 5)
    assert fitted.value_names == ("log_return", "body", "upper_wick", "lower_wick", "range")
    again = VQVAETokenizer(**TINY_VQ).fit(candles, key=jax.random.key(0), steps=100)
    np.testing.assert_array_equal(again.encode(candles), codes)
    fitted.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, VQVAETokenizer) and loaded.restarts_done == fitted.restarts_done
    np.testing.assert_array_equal(loaded.encode(candles), codes)
    np.testing.assert_array_equal(loaded.decode(codes[:50]), fitted.decode(codes[:50]))


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_codebook_of_size_zero_is_a_config_error(size):
    with pytest.raises(ConfigError, match="codebook_size"):
        VQVAEConfig(codebook_size=size)


def test_fit_past_the_fence_raises(candles):
    with pytest.raises(LeakageError, match="VQVAETokenizer.fit"):
        VQVAETokenizer(**TINY_VQ).fit(candles, key=jax.random.key(0), steps=1,
                                      fence=TimeFence(candles["timestamp"].iloc[100]))
