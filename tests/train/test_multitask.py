"""The multitask head's library side: fences, purged splits, training windows, TBPTT, the history pass."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import feature_warmup, forward_labels, validate
from chaosfm.models import FeatureMamba, MultitaskConfig
from chaosfm.train import (
    MultitaskSettings,
    multitask_batches,
    multitask_heldout,
    predict_history,
    prepare_multitask_data,
    tbptt_loss,
)


def perturb(model, seed):
    """Noise in the zero-initialised output projections, so the mixers' state path matters."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(0.2 * rng.standard_normal(leaf.shape), leaf.dtype)
        if eqx.is_inexact_array(leaf) and not np.any(np.asarray(leaf)) else leaf,
        model,
    )

ROWS = 900


def synthetic_frame(rows=ROWS, seed=0, assets=("a",)):
    parts = []
    for index, asset in enumerate(assets):
        rng = np.random.default_rng([seed, index])
        vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, rows)))  # wandering volatility
        close = 100 * np.exp(np.cumsum(vol * rng.standard_normal(rows)))
        open_ = close * np.exp(rng.normal(0, 0.002, rows))
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": pd.bdate_range("2001-01-01", periods=rows),
            "open": open_, "high": np.maximum(open_, close) * 1.003, "low": np.minimum(open_, close) * 0.997,
            "close": close, "volume": rng.uniform(1e5, 1e6, rows),
        }))
    return validate(pd.concat(parts, ignore_index=True))


SETTINGS = MultitaskSettings(
    horizon=20, vol_horizon=10, threshold=0.02, val_fraction=0.2, embargo=3, causal_checks=2,
    window=32, burn_in=8,  # segment_length 16 * tbptt_segments 2
)
CUT = 699  # the last row of each asset at or before the cutoff
BATCH, SEED = 4, 0
MODEL = MultitaskConfig(n_features=16, d_model=16, n_layers=1, d_state=8, head_dim=8, chunk_size=8)


@pytest.fixture(scope="module")
def prepared():
    frame = synthetic_frame(assets=("a", "b"))
    return frame, SETTINGS, prepare_multitask_data(frame, SETTINGS, {"a": CUT, "b": CUT})


def test_fences_and_trained_through(prepared):
    frame, settings, data = prepared
    warmup = feature_warmup()
    for asset in ("a", "b"):
        train_end, cut = data.boundaries[asset]
        assert cut == CUT and train_end == CUT - round(0.2 * (CUT - warmup))
        stamps = data.timestamps[asset]
        assert data.trained_through[asset] == stamps[train_end]  # the network
        assert pd.Timestamp(data.scaler["trained_through"][asset]) == stamps[cut]  # the scaler
        split, labels = data.split[asset], data.labels[asset]
        label_end = pd.to_datetime(labels["label_end"]).to_numpy()
        assert np.all(label_end[split == 0] <= stamps[train_end])
        assert np.all((label_end[split == 1] <= stamps[cut]) & (stamps[np.flatnonzero(split == 1)] >= stamps[train_end]))
        assert np.all(stamps[np.flatnonzero(split == 2) + 1] > stamps[cut + settings.embargo])
        assert {0, 1, 2} <= set(split.tolist())


def test_scaler_reads_rows_up_to_the_cutoff_only(prepared):
    frame, settings, data = prepared
    changed = frame.copy()
    after = frame.groupby("asset").cumcount().to_numpy() > CUT
    changed.loc[after, ["open", "high", "low", "close"]] *= 3.0  # a different future
    again = prepare_multitask_data(changed, settings, {"a": CUT, "b": CUT})
    assert again.scaler["mean"] == data.scaler["mean"] and again.scaler["std"] == data.scaler["std"]
    assert again.targets == data.targets
    np.testing.assert_array_equal(again.features["a"][: CUT + 1], data.features["a"][: CUT + 1])


def test_training_windows_stay_before_the_train_boundary(prepared):
    frame, settings, data = prepared
    batches = multitask_batches(data, settings, BATCH, SEED)
    warmup, window = feature_warmup(), settings.window
    # By hand: every (asset, start) whose window lies in [warmup, train boundary], in stream order.
    starts = [(asset, s) for asset in ("a", "b") for s in range(warmup, data.boundaries[asset][0] + 2 - window)]
    assert batches.windows == len(starts)
    batch = batches(5)
    assert batch["features"].shape == (BATCH, window, 16) and batch["mask"].shape == (BATCH, window)
    assert not batch["mask"][:, : settings.burn_in].any()
    np.testing.assert_array_equal(batches(5)["features"], batch["features"])  # a function of the step
    drawn = [starts[i] for i in np.random.default_rng([SEED, 5]).integers(0, len(starts), BATCH)]
    for i, (asset, start) in enumerate(drawn):
        rows = np.arange(start, start + window)
        assert rows[-1] <= data.boundaries[asset][0]  # the network never reads past the train boundary
        np.testing.assert_array_equal(batch["features"][i], data.features[asset][rows])
        # masked in: the training rows past the burn-in, nothing else
        np.testing.assert_array_equal(batch["mask"][i], (data.split[asset][rows] == 0) & (np.arange(window) >= settings.burn_in))
    # masked-in rows are training rows, and their labels are the standardised forward labels
    raw = forward_labels(frame.loc[frame["asset"] == "a", "close"].to_numpy(), horizon=20, threshold=0.02,
                         vol_horizon=10)
    checked = 0
    for step in range(5, 25):
        batch = batches(step)
        drawn = [starts[i] for i in np.random.default_rng([SEED, step]).integers(0, len(starts), BATCH)]
        for i, (asset, start) in enumerate(drawn):
            if asset != "a" or not batch["mask"][i].any():
                continue
            t = start + np.flatnonzero(batch["mask"][i])
            assert np.all(data.split["a"][t] == 0)
            np.testing.assert_allclose(batch["ret"][i][batch["mask"][i]],
                                       (raw["forward_return"][t] - data.targets["return_mean"]) / data.targets["return_std"],
                                       rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked > 0



def test_held_out_windows_score_the_validation_rows_only(prepared):
    frame, settings, data = prepared
    batch = multitask_heldout(data, settings, count=100)
    window, warmup = settings.window, feature_warmup()
    # By hand: windows tile each asset backwards from its cutoff row, none starting in the warm-up,
    # kept when a validation row lies past the burn-in.
    expected = []
    for asset in ("a", "b"):
        for end in range(CUT + 1, warmup + window - 1, -window):
            rows = np.arange(end - window, end)
            mask = (data.split[asset][rows] == 1) & (np.arange(window) >= settings.burn_in)
            if mask.any():
                expected.append((asset, rows, mask))
    assert len(expected) >= 2 and batch["features"].shape == (len(expected), window, 16)
    for i, (asset, rows, mask) in enumerate(expected):
        np.testing.assert_array_equal(batch["features"][i], data.features[asset][rows])
        np.testing.assert_array_equal(batch["mask"][i], mask)
        assert rows[-1] <= CUT  # never past the cutoff
    assert batch["mask"].any() and not any((data.split[a][r] != 1)[m].any() for a, r, m in expected)
    assert multitask_heldout(data, settings, count=1)["features"].shape[0] == 1


def test_tbptt_carries_the_state_forward_and_stops_its_gradient():
    model = perturb(FeatureMamba(MODEL, key=jax.random.key(0)), seed=1)
    rng = np.random.default_rng(0)
    batch = {
        "features": jnp.asarray(rng.normal(size=(2, 16, 16)), jnp.float32),
        "direction": jnp.asarray(rng.integers(0, 3, (2, 16))),
        "ret": jnp.asarray(rng.normal(size=(2, 16)), jnp.float32),
        "vol": jnp.asarray(rng.normal(size=(2, 16)), jnp.float32),
        "mask": jnp.asarray(np.arange(16) >= 8)[None, :].repeat(2, 0),  # loss on segment 2 only
    }

    def value_and_input_gradient(segments):
        def loss(features):
            return tbptt_loss(model, {**batch, "features": features}, segments=segments)[0]

        value, grad = jax.jit(jax.value_and_grad(loss))(batch["features"])
        return float(value), np.asarray(grad)

    (one, full), (two, truncated) = value_and_input_gradient(1), value_and_input_gradient(2)
    assert np.isclose(one, two, rtol=1e-5)  # the state carries: the same forward values
    # Segment 1's rows reach segment 2's loss only through the carried state: cut under TBPTT.
    assert np.abs(full[:, :8]).max() > 1e-6
    assert np.abs(truncated[:, :8]).max() == 0.0
    np.testing.assert_allclose(truncated[:, 8:], full[:, 8:], rtol=1e-6, atol=1e-6)


def test_history_prediction_does_not_depend_on_the_segment_length(prepared):
    _, _, data = prepared
    model = FeatureMamba(MODEL, key=jax.random.key(0))
    a = predict_history(model, data.features["a"], 16)
    b = predict_history(model, data.features["a"], 50)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_settings_that_do_not_fit_the_data_name_the_key():
    frame = synthetic_frame()
    with pytest.raises(ConfigError, match="cutoff"):
        prepare_multitask_data(frame, SETTINGS, {"a": 100})  # too few rows before the cutoff
    long = MultitaskSettings(**{**SETTINGS.__dict__, "window": 800})
    with pytest.raises(ConfigError, match="segment_length"):
        multitask_batches(prepare_multitask_data(frame, long, {"a": CUT}), long, BATCH, SEED)
