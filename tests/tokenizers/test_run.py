"""``chaosfm tokenize``'s library side: config, run folder, inspect, and errors before training."""

import json

import jax
import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError, verify_run
from chaosfm._config import ConfigError, parse_config
from chaosfm.tokenizers import TokenizeConfig, inspect_run, load_tokenizer, make_tokenizer, run_tokenize

from ._data import TINY_FSQ


def test_config_reads_flags_and_rejects_typos():
    config = parse_config(TokenizeConfig, {"data": "sp500, nasdaq", "levels": ["8", "4"]}, "flags")
    assert config.data == ["sp500", "nasdaq"] and config.levels == [8, 4]
    with pytest.raises(ConfigError, match="unknown key 'codebok'.*codebook"):
        parse_config(TokenizeConfig, {"data": "sp500", "codebok": 3}, "flags")
    with pytest.raises(ConfigError, match="levels"):
        make_tokenizer(parse_config(TokenizeConfig, {"data": "sp500", "levels": [8, 1]}))
    with pytest.raises(ConfigError, match="codebook_size"):
        make_tokenizer(parse_config(TokenizeConfig, {"data": "sp500", "tokenizer": "vqvae", "codebook": 0}))
    with pytest.raises(ConfigError, match="options"):
        make_tokenizer(parse_config(TokenizeConfig, {"data": "sp500", "options": {"widht": 3}}))


def test_bins_run_folder_and_inspect(trajectory, tmp_path):
    path = tmp_path / "orbit.csv"
    trajectory.to_csv(path, index=False)
    out = tmp_path / "run"
    config = TokenizeConfig(data=[str(path)], tokenizer="bins", bins="quantile", vocab_size=130,
                            options={"context_length": 100}, cutoff=15.0, out=out, speed_repeats=1)
    metrics = run_tokenize(config)
    assert metrics["rows"]["train"] == 2 * 301 and metrics["trained_through"] == {"p": 15.0, "q": 15.0}
    assert metrics["codebook_usage"]["train"] == 1.0
    for name in ("config.yaml", "meta.json", "tokenizer.json", "model.eqx", "metrics.json",
                 "code_counts.json", "example.json", "log.jsonl"):
        assert (out / name).is_file(), name
    meta = verify_run(out)
    assert meta["trained_through"] == {"p": 15.0, "q": 15.0} and meta["command"] == "tokenize"
    report = inspect_run(out)
    assert (out / "inspect.png").stat().st_size > 1000
    assert report["metrics"] == json.loads((out / "metrics.json").read_text())
    assert "perplexity" in set(report["table"]["quantity"])
    (out / "model.eqx").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match="model.eqx"):
        inspect_run(out)


def test_fsq_run_fits_before_the_cutoff_only(candles, tmp_path):
    path = tmp_path / "candles.csv"
    candles.to_csv(path, index=False)
    options = {k: v for k, v in TINY_FSQ.items() if k != "levels"}
    config = TokenizeConfig(data=[str(path)], levels=[4, 3, 2], options=options, steps=20,
                            cutoff_fraction=0.5, out=tmp_path / "run", speed_repeats=1)
    metrics = run_tokenize(config)
    assert metrics["vocab_size"] == 24 and metrics["rows"] == {"train": 300, "held_out": 300}
    assert set(metrics["reconstruction"]["held_out"]) == {"symlog_return", "body", "upper_wick", "lower_wick", "range"}
    cutoff = candles.groupby("asset")["timestamp"].nth(149)
    assert metrics["trained_through"] == {a: str(t.isoformat()) for a, t in zip(["a", "b"], cutoff)}
    tokenizer = load_tokenizer(tmp_path / "run")
    again = make_tokenizer(config).fit(
        candles.groupby("asset").head(150).reset_index(drop=True), key=jax.random.key(0), steps=20
    )
    np.testing.assert_array_equal(tokenizer.encode(candles), again.encode(candles))
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 20


def test_config_presets_parse():
    from pathlib import Path

    from chaosfm._config import read_config

    presets = sorted((Path(__file__).parents[2] / "configs").glob("tokenize-*.yaml"))
    assert len(presets) == 3
    for path in presets:
        make_tokenizer(read_config(TokenizeConfig, path))


def test_bad_data_raises_before_the_run_folder_exists(candles, tmp_path):
    from chaosfm.data import DataError

    path = tmp_path / "short.csv"
    candles.groupby("asset").head(10).to_csv(path, index=False)
    options = {k: v for k, v in TINY_FSQ.items() if k != "levels"}
    config = TokenizeConfig(data=[str(path)], levels=[4, 3, 2], options=options, steps=5, out=tmp_path / "run")
    with pytest.raises(DataError, match="training window"):
        run_tokenize(config)
    assert not (tmp_path / "run").exists()


def test_cli_flags_override_the_config(trajectory, tmp_path):
    import yaml

    from chaosfm.cli import main

    path = tmp_path / "orbit.csv"
    trajectory.to_csv(path, index=False)
    config = tmp_path / "tok.yaml"
    config.write_text(yaml.safe_dump({"data": [str(path)], "tokenizer": "bins", "options": {"context_length": 100}}))
    out = tmp_path / "run"
    argv = ["tokenize", "--config", str(config), "--bins", "quantile", "--vocab-size", "34",
            "--cutoff", "15", "--out", str(out)]
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["bins"] == "quantile" and saved["vocab_size"] == 34
    assert json.loads((out / "metrics.json").read_text())["vocab_size"] == 34
    assert main(["tokenize", "--data", str(path), "--patch", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
