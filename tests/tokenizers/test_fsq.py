"""FSQ: the grid, the straight-through gradient, causality, round trips, files and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import DataError, EmptyDataError, LeakageError, NonFiniteError, TimeFence
from chaosfm.tokenizers import FSQConfig, FSQTokenizer, FSQuantizer, load_tokenizer

from ._data import TINY_FSQ, market_frame


@pytest.fixture(scope="module")
def fitted(candles):
    return FSQTokenizer(**TINY_FSQ).fit(candles, key=jax.random.key(0), steps=300)


def test_every_code_round_trips_through_the_grid():
    quantizer = FSQuantizer((8, 5, 4, 2))
    codes = jnp.arange(quantizer.vocab_size, dtype=jnp.int32)

    @jax.jit
    def round_trip(codes):
        z = quantizer.decode(codes)
        return z, quantizer.codes_from_grid(z), quantizer.encode(z)

    z, again, requantized = round_trip(codes)
    assert z.shape == (320, 4)
    assert float(jnp.min(z)) >= -1 and float(jnp.max(z)) <= 1
    np.testing.assert_array_equal(again, codes)
    assert len(np.unique(np.asarray(requantized))) > 1


def test_each_dimension_takes_exactly_its_levels_and_gradients_pass():
    quantizer = FSQuantizer((8, 5, 4, 2))
    z = jnp.linspace(-20, 20, 4001)[:, None] * jnp.ones((1, 4))

    @jax.jit
    def grid_and_gradient(z):
        grad = jax.grad(lambda v: jnp.sum(quantizer.grid(v)))(jnp.array([[0.1, -0.3, 0.2, 0.0]]))
        return quantizer.grid(z), quantizer.grid(jnp.zeros((1, 4))), grad

    grid, at_zero, grad = grid_and_gradient(z)
    for i, level in enumerate((8, 5, 4, 2)):
        assert len(np.unique(np.asarray(grid[:, i]))) == level
    assert float(at_zero[0, 1]) == 0.0  # odd levels are centred
    assert np.all(np.asarray(grad) > 0)  # straight through the rounding


def test_entropy_loss_rewards_spreading_over_the_whole_grid():
    quantizer = FSQuantizer((4, 4), entropy_weight=1.0)
    per_level = np.array([-3.0, -0.6, 0.0, 3.0])  # latents that round to levels -2, -1, 0, 1
    # Spread: every grid cell. Thin: the diagonal only (uniform marginals, dependent dimensions,
    # the failure the joint term is there for). Collapsed: one cell.
    spread = np.array([[a, b] for a in per_level for b in per_level])
    thin = np.repeat(np.stack([per_level, per_level], axis=1), 4, axis=0)
    collapsed = np.zeros_like(spread)
    batches = jnp.asarray(np.stack([spread, thin, collapsed]), dtype=jnp.float32)
    losses = jax.jit(jax.vmap(quantizer.entropy_loss))(batches)
    assert losses[0] < losses[1] < losses[2]
    grad = jax.jit(jax.grad(quantizer.entropy_loss))(batches[1])
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


@pytest.mark.parametrize("levels", [(8, 1, 4), (0,), (), (2.5, 4), "844"])
def test_bad_levels_are_config_errors(levels):
    with pytest.raises(ConfigError, match="levels"):
        FSQTokenizer(levels=levels)


def test_window_shorter_than_receptive_field_is_a_config_error():
    with pytest.raises(ConfigError, match="receptive field"):
        FSQConfig(dilations=(1, 2, 4, 8), window=16)
    with pytest.raises(ConfigError, match="allowed options"):
        FSQTokenizer(levls=(8, 8))


def test_fit_records_trained_through_and_reconstructs_better_than_the_mean(fitted, candles):
    assert fitted.vocab_size == 24
    assert fitted.trained_through == {"a": candles["timestamp"].iloc[299], "b": candles["timestamp"].iloc[-1]}
    truth, recon = fitted.targets(candles), fitted.reconstruct(candles)
    names = list(fitted.value_names)
    keep = np.isfinite(truth[names].to_numpy()).all(axis=1)
    x, y = truth[names].to_numpy()[keep], recon[names].to_numpy()[keep]
    rmse = np.sqrt(np.mean((x - y) ** 2, axis=0))
    baseline = np.sqrt(np.mean((x - x.mean(axis=0)) ** 2, axis=0))
    assert np.all(rmse < 0.9 * baseline)


def test_decode_of_encode_round_trip(fitted, candles):
    codes = fitted.encode(candles)
    assert codes.dtype == np.int32 and codes.shape == (len(candles),)
    assert codes.min() >= 0 and codes.max() < fitted.vocab_size
    one_asset = codes[:300]
    features = fitted.decode(one_asset)
    assert features.shape == (300, 5)
    # Decoding is a function of the codes: re-encoding the reconstruction's codes is stable.
    np.testing.assert_array_equal(fitted.decode(one_asset), features)
    batch = fitted.decode(np.stack([one_asset[:50], one_asset[50:100]]))
    assert batch.shape == (2, 50, 5)
    np.testing.assert_allclose(batch[0], features[:50], rtol=1e-5, atol=1e-6)
    reconstruction = fitted.reconstruct(candles)
    np.testing.assert_allclose(reconstruction[list(fitted.value_names)].to_numpy()[:300], features, rtol=1e-5, atol=1e-6)


# Patch causality is also checked on the bare Encoder in test_cnn.py; the tokenizer-level check
# for patches compiles a second training step, so it is marked slow.
@pytest.mark.parametrize("patch", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_code_at_t_depends_only_on_candles_up_to_t(candles, fitted, patch):
    tokenizer = fitted if patch == 1 else FSQTokenizer(patch=patch, **TINY_FSQ).fit(
        candles, key=jax.random.key(1), steps=5
    )
    frame = candles[candles["asset"] == "a"].reset_index(drop=True)
    t = 150
    changed = frame.copy()
    changed.loc[t:, ["open", "high", "low", "close"]] *= np.linspace(1.3, 0.7, len(frame) - t)[:, None]
    before, after = tokenizer.tokens(frame), tokenizer.tokens(changed)
    earlier = before["timestamp"] < frame["timestamp"].iloc[t]
    assert earlier.sum() == t // patch
    np.testing.assert_array_equal(before["code"][earlier], after["code"][earlier])
    assert (before["code"][~earlier] != after["code"][~earlier]).any()
    # The same through encode on a prefix: codes of a prefix are a prefix of the codes.
    np.testing.assert_array_equal(tokenizer.encode(frame.iloc[: t + 7]), tokenizer.encode(frame)[: (t + 7) // patch])


def test_same_seed_same_codes_and_save_load_identity(candles, fitted, tmp_path):
    again = FSQTokenizer(**TINY_FSQ).fit(candles, key=jax.random.key(0), steps=300)
    np.testing.assert_array_equal(again.encode(candles), fitted.encode(candles))
    other = FSQTokenizer(**TINY_FSQ).fit(candles, key=jax.random.key(7), steps=300)
    assert (other.encode(candles) != fitted.encode(candles)).any()
    fitted.save(tmp_path)
    loaded = FSQTokenizer.load(tmp_path)
    assert loaded.config == fitted.config and loaded.trained_through == fitted.trained_through
    np.testing.assert_array_equal(loaded.encode(candles), fitted.encode(candles))
    np.testing.assert_array_equal(loaded.decode(np.arange(24, dtype=np.int32)), fitted.decode(np.arange(24, dtype=np.int32)))
    assert isinstance(load_tokenizer(tmp_path), FSQTokenizer)


def test_fit_past_the_fence_raises(candles):
    fence = TimeFence(candles["timestamp"].iloc[200])
    with pytest.raises(LeakageError, match="FSQTokenizer.fit"):
        FSQTokenizer(**TINY_FSQ).fit(candles, key=jax.random.key(0), steps=1, fence=fence)
    FSQTokenizer(**TINY_FSQ).fit(fence.train(candles), key=jax.random.key(0), steps=1, fence=fence)


def test_bad_input_gives_chaosfm_errors(candles, fitted):
    tokenizer = FSQTokenizer(**TINY_FSQ)
    with pytest.raises(EmptyDataError):
        tokenizer.fit(candles.iloc[:0], key=jax.random.key(0), steps=1)
    with pytest.raises(ConfigError, match="key"):
        tokenizer.fit(candles, steps=1)
    broken = candles.copy()
    broken.loc[17, "close"] = np.nan
    with pytest.raises(NonFiniteError, match="row 17"):
        tokenizer.fit(broken, key=jax.random.key(0), steps=1)
    with pytest.raises(DataError, match="training window"):
        tokenizer.fit(market_frame(rows=12, assets=("s",)), key=jax.random.key(0), steps=1)
    with pytest.raises(DataError, match="receptive field"):
        fitted.encode(market_frame(rows=5, assets=("s",)))
    with pytest.raises(ConfigError, match="not fitted"):
        tokenizer.encode(candles)
    with pytest.raises(DataError, match="codes must lie"):
        fitted.decode(np.array([0, 24]))
    with pytest.raises(DataError, match="integers"):
        fitted.decode(np.array([0.5]))
    with pytest.raises(DataError):
        tokenizer.fit(pd.DataFrame({"asset": ["a"], "timestamp": [0], "x0": [1.0]}), key=jax.random.key(0))


def test_health_skips_held_out_assets_too_short_to_encode(fitted, candles):
    from chaosfm.tokenizers import tokenizer_health

    train = candles.groupby("asset").head(200).reset_index(drop=True)
    held_out = candles.groupby("asset").tail(100)
    held_out = held_out[(held_out["asset"] == "a") | (held_out.groupby("asset").cumcount() < 5)]
    metrics = tokenizer_health(fitted, train, held_out.reset_index(drop=True), repeats=1)
    assert metrics["held_out_skipped"] == {"b": 5}
    assert metrics["codes"]["held_out"] == 100
    assert 0 < metrics["codebook_usage"]["held_out"] <= 1
