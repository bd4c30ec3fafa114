"""Encoder features on a panel: the embeddings equal embedding each window one at a time, NaN
before the first full context and where an asset has no row; nothing after row t changes them;
convergence is mvx's at the computed rows and carried forward causally between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm.agents import crossing_scores, encoder_features, market_panel, multiverse
from chaosfm.data import validate
from chaosfm.models import JEPA, JEPAConfig
from chaosfm.train import CLOSE_FEATURES, EncoderInputs, FeatureScaler, embed_windows, feature_streams

ROWS = 70
VOL_WINDOW = 5
EVERY = 3
SETTINGS = dict(universes=3, samples=4, scale=0.05)
CONFIG = JEPAConfig(n_features=len(CLOSE_FEATURES), context_length=8, d_model=8, n_layers=1, d_state=4,
                    head_dim=4, d_embed=4, d_pred=4, min_future=2, max_future=4, min_span=1, max_span=2,
                    cfm_weight=1.0, cfm_horizon=2, cfm_hidden=8, cfm_steps=2)


def _frame(seed: int = 0) -> pd.DataFrame:
    """Three close-only assets on business days: B is listed at row 15, C misses rows 40-44."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2001-01-01", periods=ROWS)
    parts = []
    for name in "ABC":
        close = 20.0 * np.exp(np.cumsum(0.02 * rng.standard_normal(ROWS)))
        keep = np.ones(ROWS, bool)
        keep[:15] = name != "B"
        keep[40:45] = name != "C"
        parts.append(pd.DataFrame({"asset": name, "timestamp": dates[keep], "close": close[keep]}))
    return validate(pd.concat(parts, ignore_index=True))


@pytest.fixture(scope="module")
def setup():
    frame = _frame()
    model = JEPA(CONFIG, key=jax.random.key(1))
    streams = {a: v for a, (v, _) in feature_streams(frame, VOL_WINDOW).items()}
    inputs = EncoderInputs(FeatureScaler.fit(streams, CLOSE_FEATURES), VOL_WINDOW)
    _, stamps, names = market_panel(frame, fit_end=frame["timestamp"].max(), vol_window=VOL_WINDOW)
    out = encoder_features(model, inputs, frame, stamps, names, key=jax.random.key(7), every=EVERY, **SETTINGS)
    return frame, model, inputs, stamps, names, out


def _reference_rows(inputs, frame, stamps, name):
    """``(stream row, panel row)`` of every window end of one asset, and the stream's inputs."""
    stream = inputs.streams(frame)[name]
    ends = np.arange(CONFIG.context_length - 1, len(stream.inputs))
    rows = pd.Index(stamps).get_indexer(pd.Index(stream.stamps[ends]))
    return stream.inputs, ends, rows


def test_embeddings_equal_each_window_embedded_alone(setup):
    frame, model, inputs, stamps, names, out = setup
    assert names == ["A", "B", "C"] and out.embeddings.shape == (len(stamps), 3, CONFIG.d_embed)
    expected = np.full(out.embeddings.shape, np.nan, np.float32)
    for column, name in enumerate(names):
        stream_inputs, ends, rows = _reference_rows(inputs, frame, stamps, name)
        for end, row in zip(ends, rows):  # the slow way: one window at a time
            expected[row, column] = embed_windows(model.encoder, stream_inputs, np.array([end]), CONFIG.context_length,
                                                  chunk=1)[0]
    np.testing.assert_array_equal(np.isnan(out.embeddings), np.isnan(expected))
    np.testing.assert_allclose(out.embeddings, expected, atol=2e-5)
    # NaN before the first full context: 20 rows of close-only warm-up (log_return_20), then 7 more.
    first = 20 + CONFIG.context_length - 1
    assert np.all(np.isnan(out.embeddings[:first, 0])) and np.all(np.isfinite(out.embeddings[first:, 0]))
    assert np.all(np.isnan(out.embeddings[: 15 + first, 1])) and np.isfinite(out.embeddings[15 + first, 1]).all()
    # C has no rows 40-44: NaN there, and its later windows read its own rows across the gap.
    assert np.all(np.isnan(out.embeddings[40:45, 2])) and np.all(np.isfinite(out.embeddings[45:, 2]))


def test_a_later_row_changes_nothing_before_it(setup):
    frame, model, inputs, stamps, names, out = setup
    changed = frame.copy()
    later = (changed["asset"] == "A") & (changed["timestamp"] == stamps[50])
    changed.loc[later, "close"] *= 1.5
    again = encoder_features(model, inputs, changed, stamps, names, key=jax.random.key(7), every=EVERY, **SETTINGS)
    np.testing.assert_array_equal(again.embeddings[:50], out.embeddings[:50])
    np.testing.assert_array_equal(again.convergence[:50], out.convergence[:50])
    assert not np.allclose(again.embeddings[50, 0], out.embeddings[50, 0])
    np.testing.assert_array_equal(again.embeddings[:, 1:], out.embeddings[:, 1:])  # other assets untouched


def test_convergence_is_mvx_at_computed_rows_and_carried_forward(setup):
    frame, model, inputs, stamps, names, out = setup
    key = jax.random.key(7)
    assert out.convergence.shape == (len(stamps), 3)
    for column, name in enumerate(names):
        stream_inputs, ends, rows = _reference_rows(inputs, frame, stamps, name)
        computed = ends[::EVERY]  # mvx's origins: the first full context, then every EVERY rows
        values = {}
        for end, row in zip(ends, rows):
            if end in computed:
                z = embed_windows(model.encoder, stream_inputs, np.array([end]), CONFIG.context_length, chunk=1)[0]
                origin = jax.random.fold_in(jax.random.fold_in(key, column), int(end))  # mvx's key
                starts, futures = multiverse(model, jnp.asarray(z), key=origin, steps=3, **SETTINGS)
                values[row] = crossing_scores(np.asarray(starts), np.asarray(futures)).convergence
        present = set(frame.loc[frame["asset"] == name, "timestamp"])
        latest = np.nan
        for t in range(len(stamps)):
            latest = values.get(t, latest)  # only values computed at or before t
            expected = latest if pd.Timestamp(stamps[t]) in present else np.nan
            np.testing.assert_allclose(out.convergence[t, column], expected, rtol=1e-4, err_msg=f"{name} row {t}")
    finite = out.convergence[np.isfinite(out.convergence)]
    assert finite.size and np.all((finite >= 0) & (finite <= 1))


def test_without_a_flow_head_or_a_key(setup):
    frame, model, inputs, stamps, names, out = setup
    no_flow = JEPA(CONFIG.replace(cfm_weight=0.0), key=jax.random.key(1))
    with pytest.raises(ValueError, match="flow head .*convergence=False"):
        encoder_features(no_flow, inputs, frame, stamps, names, key=jax.random.key(0))
    only = encoder_features(no_flow, inputs, frame, stamps, names, convergence=False)
    assert only.convergence is None and only.embeddings.shape == out.embeddings.shape
    with pytest.raises(ValueError, match="key="):
        encoder_features(model, inputs, frame, stamps, names)
    with pytest.raises(ValueError, match="every must be >= 1, got 0"):
        encoder_features(model, inputs, frame, stamps, names, key=jax.random.key(0), every=0)


def test_features_feed_the_panel(setup):
    frame, _, _, stamps, names, out = setup
    extra = np.concatenate([out.embeddings, out.convergence[..., None]], axis=-1)
    panel, panel_stamps, _ = market_panel(frame, fit_end=frame["timestamp"].max(), vol_window=VOL_WINDOW,
                                          extra=extra)
    np.testing.assert_array_equal(panel_stamps, stamps)
    # A row is valid only once the encoder's context is full (and where the asset trades).
    np.testing.assert_array_equal(np.asarray(panel.valid)[:, 0], np.isfinite(extra[:, 0]).all(axis=-1))
