"""What a JEPA encoder reads: codes aligned with the tokenizer's own tokens, pretraining on codes,
the tokenizer as an upstream record, and the rules a tokenizer must meet; the close-only features
(causal, their set recorded in the scaler), pretraining on closes, and an encoder refusing frames
of the other kind by naming both feature sets."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import LeakageError, load
from chaosfm.forecasters import JEPAForecaster
from chaosfm.jobs.pretrain import PretrainConfig, run as run_pretrain
from chaosfm.tokenizers import FSQConfig, FSQTokenizer
from chaosfm.train import (
    CLOSE_FEATURES,
    FEATURES,
    EncoderInputs,
    FeatureScaler,
    feature_set,
    feature_streams,
    load_pretrained,
)

TINY_MODEL = dict(context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
                  min_future=4, max_future=8, min_span=2, max_span=4, cfm_horizon=3, cfm_steps=2)
TINY_TRAIN = dict(steps=3, batch_size=4, warmup_steps=0, checkpoint_every=3, log_every=1)
TINY_TOKENIZER = {"kind": "fsq", "steps": 3, "options": {"batch_size": 4, "window": 32, "levels": [4, 4, 3]}}
CUTOFF = "2006-06-30"


@pytest.fixture(scope="module")
def frame():
    frame = load("sp500")
    return frame[(frame["timestamp"] >= "2005-01-01") & (frame["timestamp"] <= "2006-12-31")].reset_index(drop=True)


@pytest.fixture(scope="module")
def code_run(frame, tmp_path_factory):
    run = tmp_path_factory.mktemp("jepa-codes") / "run"
    config = PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": CUTOFF}, "model": {**TINY_MODEL, "cfm_weight": 1.0},
         "train": TINY_TRAIN, "tokenizer": TINY_TOKENIZER, "out": str(run)}
    )
    return run, run_pretrain(config, frame=frame)


def test_codes_are_the_tokenizers_own_tokens_row_for_row(frame, code_run):
    run, _ = code_run
    model, inputs, _ = load_pretrained(run)
    assert inputs.kind == "codes" and model.config.vocab_size == inputs.tokenizer.vocab_size == 48
    (stream,) = inputs.streams(frame).values()
    # Independent reference: the tokenizer's long frame of (timestamp, code) for the same rows.
    tokens = inputs.tokenizer.tokens(frame).set_index("timestamp")["code"]
    np.testing.assert_array_equal(stream.inputs, tokens.loc[stream.stamps].to_numpy())
    assert stream.inputs.dtype == np.int32
    # The raw features ride along for the targets, the same rows as the feature encoder's.
    (values, stamps), = feature_streams(frame).values()
    np.testing.assert_array_equal(stream.features, values)
    assert list(stream.stamps) == list(stamps)
    # A feature encoder's inputs on the same frame: the standardised features.
    scaled = EncoderInputs(inputs.scaler).streams(frame)["sp500"]
    np.testing.assert_allclose(scaled.inputs, inputs.scaler(values))


def test_pretraining_on_codes_records_the_tokenizer_upstream(frame, code_run):
    run, metrics = code_run
    assert metrics["input"] == "codes" and metrics["vocab_size"] == 48
    assert metrics["heldout"]["windows"] > 50
    meta = json.loads((run / "meta.json").read_text())
    assert meta["input"] == "codes" and "tokenizer/model.eqx" in meta["files"]
    # The tokenizer was fitted on the encoder's rows only: through the cutoff, read from the artifact.
    assert meta["upstream_trained_through"] == meta["trained_through"] == {"sp500": f"{CUTOFF}T00:00:00"}
    forecaster = JEPAForecaster(run, horizon=3)
    assert forecaster.upstream_trained_through() == [{"sp500": pd.Timestamp(CUTOFF)}] * 2
    forecaster.fit(frame[frame["timestamp"] <= "2006-03-31"])
    context = frame.iloc[200 : 200 + forecaster.min_context()]
    forecast = forecaster.forecast(context, 3, 20, key=jax.random.key(0))
    assert forecast.samples.shape == (20, 3, 1) and np.all(np.isfinite(forecast.samples))


def test_a_saved_tokenizer_that_saw_past_the_cutoff_is_refused(frame, tmp_path):
    later = frame[frame["timestamp"] <= "2006-09-29"]
    tokenizer = FSQTokenizer(FSQConfig(batch_size=4, window=32, levels=(4, 4, 3)))
    tokenizer.fit(later, key=jax.random.key(0), steps=2).save(tmp_path / "tok")
    config = PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": CUTOFF}, "model": TINY_MODEL, "train": TINY_TRAIN,
         "tokenizer": {"path": str(tmp_path / "tok")}, "out": str(tmp_path / "run")}
    )
    with pytest.raises(LeakageError, match="tokenizer.path .* through 2006-09-29"):
        run_pretrain(config, frame=frame)
    assert not (tmp_path / "run" / "model.eqx").exists()


@pytest.mark.parametrize(
    "section, rule",
    [
        ({"kind": "bins"}, "fsq or vqvae"),
        ({"kind": "fsq", "options": {"patch": 2, "window": 64}}, "one code per candle"),
        ({"kind": "fsq", "path": "somewhere"}, "exactly one of"),
        ({"kind": "fsq", "options": {"levelz": [4]}}, "levelz"),
    ],
)
def test_tokenizer_section_rules(section, rule):
    with pytest.raises((ConfigError, ValueError), match=rule):
        PretrainConfig.model_validate({"data": {"names": ["sp500"]}, "tokenizer": section})


def test_feature_inputs_keep_the_scaler_only(frame):
    (values, _), = feature_streams(frame).values()
    inputs = EncoderInputs(FeatureScaler.fit({"sp500": values}))
    assert inputs.kind == "features" and inputs.vocab_size == 0 and inputs.upstream_trained_through is None
    stream = inputs.streams(frame)["sp500"]
    np.testing.assert_allclose(stream.inputs.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(stream.inputs.std(axis=0), 1.0, atol=1e-4)


def test_close_only_features_are_causal_and_what_they_say(frame):
    closes = frame[["asset", "timestamp", "close"]]
    assert feature_set(closes) == CLOSE_FEATURES and feature_set(frame) == FEATURES
    (values, stamps), = feature_streams(closes).values()
    assert values.shape == (len(closes) - 20, len(CLOSE_FEATURES))  # log_return_20 needs 20 earlier closes
    assert stamps.iloc[0] == closes["timestamp"].iloc[20]
    log_close = np.log(closes["close"].to_numpy())
    for column, rows in ((2, 5), (3, 20)):
        np.testing.assert_allclose(values[:, column], log_close[20:] - log_close[20 - rows : len(log_close) - rows])
    # The shared columns are the candle set's, row for row.
    (candle_values, candle_stamps), = feature_streams(frame).values()
    shared = pd.Index(stamps).get_indexer(candle_stamps)
    np.testing.assert_allclose(values[shared[shared >= 0]][:, :2], candle_values[shared >= 0][:, [0, 5]])
    # Causal: changing a later close changes no earlier row.
    changed = closes.copy()
    changed.loc[changed.index[300], "close"] *= 1.3
    (again, _), = feature_streams(changed).values()
    np.testing.assert_array_equal(again[: 300 - 20], values[: 300 - 20])
    assert not np.allclose(again[300 - 20], values[300 - 20])


def test_close_only_scaler_round_trips_through_json(frame):
    closes = frame[["asset", "timestamp", "close"]]
    scaler = FeatureScaler.fit({a: v for a, (v, _) in feature_streams(closes).items()}, CLOSE_FEATURES)
    loaded = FeatureScaler.from_json(json.loads(json.dumps(scaler.to_json())))
    assert loaded.features == CLOSE_FEATURES == tuple(scaler.to_json()["features"])
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    np.testing.assert_array_equal(loaded.std, scaler.std)
    # A run written before close-only encoders has no "features" key: the candle set.
    old = {"mean": [0.0] * len(FEATURES), "std": [1.0] * len(FEATURES)}
    assert FeatureScaler.from_json(old).features == FEATURES
    with pytest.raises(ValueError, match="'open_gap'.* not a feature set .*close-only features"):
        FeatureScaler.from_json({**old, "features": ["open_gap"], "mean": [0.0], "std": [1.0]})
    with pytest.raises(ValueError, match="one value per feature"):
        FeatureScaler.from_json({**old, "features": list(CLOSE_FEATURES)})


def test_an_encoder_reads_only_frames_of_its_kind(frame):
    from chaosfm.data import DataError

    closes = frame[["asset", "timestamp", "close"]]
    candle = EncoderInputs(FeatureScaler.fit({a: v for a, (v, _) in feature_streams(frame).items()}))
    close = EncoderInputs(FeatureScaler.fit({a: v for a, (v, _) in feature_streams(closes).items()}, CLOSE_FEATURES))
    assert close.features == CLOSE_FEATURES and close.streams(closes)["sp500"].inputs.shape[1] == 4
    candles, close_only = r"candle features \(symlog_return, body", r"close-only features \(symlog_return, realized_vol"
    with pytest.raises(DataError, match=f"reads {candles}.*is close-only and gives {close_only}"):
        candle.streams(closes)
    with pytest.raises(DataError, match=f"reads {close_only}.*has open, high and low and gives {candles}"):
        close.streams(frame)


def test_pretraining_on_closes_reads_the_close_only_features(frame, tmp_path):
    from chaosfm.data import DataError

    closes = frame[["asset", "timestamp", "close"]]
    config = PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": CUTOFF}, "model": TINY_MODEL, "train": TINY_TRAIN,
         "out": str(tmp_path / "run")}
    )
    metrics = run_pretrain(config, frame=closes)
    assert metrics["input"] == "features" and metrics["features"] == list(CLOSE_FEATURES)
    model, inputs, _ = load_pretrained(tmp_path / "run")
    assert inputs.features == CLOSE_FEATURES and model.config.n_features == len(CLOSE_FEATURES)
    (stream,) = inputs.streams(closes).values()
    assert stream.inputs.shape == (len(closes) - 20, 4) and np.all(np.isfinite(stream.inputs))
    with pytest.raises(DataError, match="close-only features .*candle features"):
        inputs.streams(frame)


def test_a_code_reading_encoder_refuses_a_close_only_frame_by_name(frame, code_run, tmp_path):
    from chaosfm.data import MissingColumnError

    closes = frame[["asset", "timestamp", "close"]]
    _, inputs, _ = load_pretrained(code_run[0])
    with pytest.raises(MissingColumnError, match="JEPA encoder reading fsq codes needs open, high and low"):
        inputs.streams(closes)
    config = PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": CUTOFF}, "model": TINY_MODEL, "train": TINY_TRAIN,
         "tokenizer": TINY_TOKENIZER, "out": str(tmp_path / "run")}
    )
    with pytest.raises(MissingColumnError, match="JEPA pretraining on tokenizer codes .*needs open, high and low"):
        run_pretrain(config, frame=closes)
    assert not (tmp_path / "run").exists()
