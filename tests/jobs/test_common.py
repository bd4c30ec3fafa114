"""One cutoff rule for every command: the jobs fence the same rows when no cutoff is given."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import LeakageError, TimeFence, validate
from chaosfm.jobs import evaluate, multitask, tokenize, train, tune
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION, parse_cutoff, resolve_fence

LENGTHS = {"aaa": 600, "bbb": 430}


def _two_assets(path):
    """Two daily assets of unequal lengths and different start dates, written as one long CSV."""
    rng = np.random.default_rng(4)
    parts = []
    for offset, (asset, rows) in enumerate(LENGTHS.items()):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
        opening = close * np.exp(rng.normal(0, 0.002, rows))
        parts.append(pd.DataFrame({
            "asset": asset,
            "timestamp": pd.bdate_range("2001-01-01", periods=rows) + pd.Timedelta(days=7 * offset),
            "open": opening,
            "high": np.maximum(opening, close) * 1.003,
            "low": np.minimum(opening, close) * 0.997,
            "close": close,
            "volume": rng.integers(1000, 2000, rows).astype(float),
        }))
    frame = pd.concat(parts, ignore_index=True)
    frame.to_csv(path, index=False)
    return validate(frame)


def _expected(frame):
    """Each asset's timestamp at row int(n * 0.8) - 1: its first 80% of rows are before the fence."""
    return {
        asset: part["timestamp"].iloc[int(len(part) * DEFAULT_CUTOFF_FRACTION) - 1]
        for asset, part in frame.groupby("asset", sort=False)
    }


def _stamps(record):
    return {asset: pd.Timestamp(value) for asset, value in record.items()}


@pytest.mark.slow
def test_every_job_fences_each_asset_at_the_same_default_cutoff(tmp_path):
    path = tmp_path / "two.csv"
    frame = _two_assets(path)
    expected = _expected(frame)
    assert len(set(expected.values())) == 2  # the assets really differ

    metrics = evaluate.run(evaluate.read(None, {
        "datasets": [{"name": str(path)}], "models": ["random_walk"], "out": str(tmp_path / "evaluate"),
        "protocol.horizon": 2, "protocol.num_samples": 4, "protocol.max_windows": 2, "protocol.min_context": 30,
        "protocol.context_length": 40,
    }))
    (entry,) = metrics["datasets"].values()
    assert _stamps(entry["cutoff"]) == expected
    seen = json.loads((tmp_path / "evaluate" / "meta.json").read_text())["trained_through"]
    assert _stamps(next(iter(seen.values()))) == expected

    tokenize.run(tokenize.read(None, {
        "data": [str(path)], "tokenizer": "bins", "vocab_size": 16, "out": str(tmp_path / "tokenize"),
        "speed_repeats": 1,
    }))
    assert _stamps(json.loads((tmp_path / "tokenize" / "meta.json").read_text())["trained_through"]) == expected

    train.run(train.read(None, {
        "data": {"names": [str(path)]},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 16}},
        "model": {"kind": "gpt", "context_length": 8, "d_model": 16, "n_layers": 1},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1},
        "out": str(tmp_path / "train"),
    }))
    meta = json.loads((tmp_path / "train" / "meta.json").read_text())
    assert _stamps(meta["trained_through"]) == expected
    assert _stamps(meta["upstream_trained_through"]) == expected

    for asset in LENGTHS:  # tune follows one asset at a time
        config = tune.read(None, {
            "data": str(path), "asset": asset, "length": None, "max_memory": 32, "horizon": 2, "trials": 1,
            "max_folds": 1, "out": str(tmp_path / f"tune-{asset}"),
        })
        assert tune.tuning_frame(config)["timestamp"].iloc[-1] == expected[asset]
        result = tune.run(config, score=lambda predictor: 1.0)  # a stand-in score: the fence is what is tested
        assert _stamps(result["trained_through"]) == {asset: expected[asset]}

    result = multitask.run(multitask.read(None, {
        "data": str(path), "horizon": 5, "vol_horizon": 5, "segment_length": 8, "burn_in": 0, "causal_checks": 0,
        "val_fraction": 0.1, "out": str(tmp_path / "multitask"), "train.steps": 2, "train.batch_size": 2,
        "train.tbptt_segments": 1, "train.checkpoint_every": 2,
    }))
    boundaries = {asset: pd.Timestamp(b["cutoff"]) for asset, b in result["boundaries"].items()}
    assert boundaries == expected
    scaler = json.loads((tmp_path / "multitask" / "meta.json").read_text())["upstream_trained_through"]
    assert _stamps(scaler) == expected


def test_resolve_fence_one_timestamp_per_asset_and_the_default(tmp_path):
    frame = _two_assets(tmp_path / "two.csv")
    default = resolve_fence(frame)
    assert default.per_asset(frame) == _expected(frame)
    assert default.before(frame).sum() == sum(int(n * DEFAULT_CUTOFF_FRACTION) for n in LENGTHS.values())

    one = resolve_fence(frame, "2001-06-01", embargo=3)
    assert set(one.per_asset(frame).values()) == {pd.Timestamp("2001-06-01")} and one.embargo == 3
    mapping = resolve_fence(frame, "aaa=2001-06-01,bbb=2001-05-01")
    assert mapping.per_asset(frame) == {"aaa": pd.Timestamp("2001-06-01"), "bbb": pd.Timestamp("2001-05-01")}
    assert parse_cutoff("aaa=1,bbb=2") == {"aaa": "1", "bbb": "2"} and parse_cutoff("2001-01-01") == "2001-01-01"

    with pytest.raises(ConfigError, match=r"data.cutoff: .*no cutoff for asset\(s\) \['bbb'\]"):
        resolve_fence(frame, {"aaa": "2001-06-01"}, key="data.cutoff")
    with pytest.raises(ConfigError, match="cutoff: .*not a date"):
        resolve_fence(frame, "soon")
    with pytest.raises(ConfigError, match="no rows at or before the cutoff"):
        resolve_fence(frame, "1990-01-01")
    # The fence refuses data past it, per asset.
    fence = TimeFence.resolve(frame, None, 0.5)
    with pytest.raises(LeakageError):
        fence.check(frame, "fit")


def test_load_data_reads_with_the_jobs_read_options_and_a_datasets_own_options_win(tmp_path):
    from chaosfm.data import TimestampOrderError
    from chaosfm.jobs._common import ReadOptions, load_data

    days = pd.date_range("2024-01-01", periods=15, freq="D")
    path = tmp_path / "eu.csv"
    table = pd.DataFrame({"date": days.strftime("%d/%m/%Y"), "close": np.linspace(1.25, 8.25, 15)})
    table.iloc[::-1].to_csv(path, sep=";", decimal=",", index=False)
    assert ReadOptions().read_options() == {}
    read = ReadOptions(repair=True, dayfirst=True)
    frame = load_data([str(path)], read=read)
    assert frame["timestamp"].tolist() == days.tolist()
    np.testing.assert_array_equal(frame["close"].to_numpy(), np.linspace(1.25, 8.25, 15))
    with pytest.raises(TimestampOrderError, match="--repair would sort"):
        load_data(str(path), {"repair": False}, read)  # the dataset's own options win
