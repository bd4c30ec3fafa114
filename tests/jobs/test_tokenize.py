"""``chaosfm tokenize`` (``jobs.tokenize``): config, run folder, inspect, and errors before training."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm._artifacts import ArtifactError, verify_run
from chaosfm._config import ConfigError, parse_config
from chaosfm.data import validate
from chaosfm.jobs.tokenize import TokenizeConfig, inspect, read, run, tokenizer_of
from chaosfm.tokenizers import load_tokenizer

# As tests/tokenizers/_data.py and conftest.py (a tests package's helpers are not importable from another).
TINY_FSQ = dict(levels=(4, 3, 2), width=8, decoder_width=8, dilations=(1, 2), window=16, batch_size=4,
                learning_rate=1e-2)


@pytest.fixture(scope="module")
def candles():
    """Random-walk daily candles with fat-tailed returns, 300 rows of two assets, validated."""
    rng = np.random.default_rng(0)
    parts = []
    for asset in ("a", "b"):
        returns = 0.01 * rng.standard_t(4, 300)
        close = 100 * np.exp(np.cumsum(returns))
        previous = np.r_[100.0, close[:-1]]
        open_ = previous * np.exp(0.002 * rng.standard_normal(300))
        high = np.maximum(open_, close) * np.exp(np.abs(0.004 * rng.standard_normal(300)))
        low = np.minimum(open_, close) * np.exp(-np.abs(0.004 * rng.standard_normal(300)))
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": pd.bdate_range("2001-01-01", periods=300),
            "open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1e6, 2e6, 300),
        }))
    return validate(pd.concat(parts, ignore_index=True))


@pytest.fixture(scope="module")
def trajectory():
    """Two channels of a noisy oscillator with a nonzero mean, two assets."""
    rng = np.random.default_rng(1)
    t = np.arange(400) * 0.05
    parts = []
    for asset, phase in (("p", 0.0), ("q", 1.0)):
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": t,
            "x0": 8 * np.sin(t + phase) + 0.1 * rng.standard_normal(len(t)),
            "x1": 20 + 5 * np.cos(1.3 * t + phase),
        }))
    return validate(pd.concat(parts, ignore_index=True))


def test_config_reads_flags_and_rejects_typos():
    config = parse_config(TokenizeConfig, {"data": "sp500, nasdaq", "levels": ["8", "4"]}, "flags")
    assert config.data == ["sp500", "nasdaq"] and config.levels == [8, 4]
    with pytest.raises(ConfigError, match="unknown key 'codebok'.*codebook"):
        parse_config(TokenizeConfig, {"data": "sp500", "codebok": 3}, "flags")
    with pytest.raises(ConfigError, match="levels"):
        tokenizer_of(parse_config(TokenizeConfig, {"data": "sp500", "levels": [8, 1]}))
    with pytest.raises(ConfigError, match="codebook_size"):
        tokenizer_of(parse_config(TokenizeConfig, {"data": "sp500", "tokenizer": "vqvae", "codebook": 0}))
    with pytest.raises(ConfigError, match="options"):
        tokenizer_of(parse_config(TokenizeConfig, {"data": "sp500", "options": {"widht": 3}}))


def test_read_puts_flags_over_the_file(tmp_path):
    file = tmp_path / "tok.yaml"
    file.write_text("data: [sp500]\ntokenizer: bins\nvocab_size: 64\n")
    config = read(file, {"vocab_size": 34, "seed": None, "out": str(tmp_path / "run")})
    assert config.tokenizer == "bins" and config.vocab_size == 34 and config.seed == 0
    assert config.out == tmp_path / "run"
    with pytest.raises(ConfigError, match="vocab_sise"):
        read(file, {"vocab_sise": 3})


def test_bins_run_folder_and_inspect(trajectory, tmp_path):
    path = tmp_path / "orbit.csv"
    trajectory.to_csv(path, index=False)
    out = tmp_path / "run"
    config = TokenizeConfig(data=[str(path)], tokenizer="bins", bins="quantile", vocab_size=130,
                            options={"context_length": 100}, cutoff=15.0, out=out, speed_repeats=1)
    metrics = run(config)
    assert metrics["rows"]["train"] == 2 * 301 and metrics["trained_through"] == {"p": 15.0, "q": 15.0}
    assert metrics["codebook_usage"]["train"] == 1.0
    for name in ("config.yaml", "meta.json", "tokenizer.json", "model.eqx", "metrics.json",
                 "code_counts.json", "example.json", "log.jsonl"):
        assert (out / name).is_file(), name
    meta = verify_run(out)
    assert meta["trained_through"] == {"p": 15.0, "q": 15.0} and meta["command"] == "tokenize"
    report = inspect(out)
    assert (out / "inspect.png").stat().st_size > 1000
    assert report["metrics"] == json.loads((out / "metrics.json").read_text())
    assert "perplexity" in set(report["table"]["quantity"])
    (out / "model.eqx").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match="model.eqx"):
        inspect(out)


def test_fsq_run_fits_before_the_cutoff_only(candles, tmp_path):
    path = tmp_path / "candles.csv"
    candles.to_csv(path, index=False)
    options = {k: v for k, v in TINY_FSQ.items() if k != "levels"}
    config = TokenizeConfig(data=[str(path)], levels=[4, 3, 2], options=options, steps=20,
                            cutoff_fraction=0.5, out=tmp_path / "run", speed_repeats=1)
    metrics = run(config)
    assert metrics["vocab_size"] == 24 and metrics["rows"] == {"train": 300, "held_out": 300}
    assert set(metrics["reconstruction"]["held_out"]) == {"symlog_return", "body", "upper_wick", "lower_wick", "range"}
    cutoff = candles.groupby("asset")["timestamp"].nth(149)
    assert metrics["trained_through"] == {a: str(t.isoformat()) for a, t in zip(["a", "b"], cutoff)}
    tokenizer = load_tokenizer(tmp_path / "run")
    again = tokenizer_of(config).fit(
        candles.groupby("asset").head(150).reset_index(drop=True), key=jax.random.key(0), steps=20,
        val_fraction=0.1,  # the config's default: the last rows of each asset only scored, never trained on
    )
    np.testing.assert_array_equal(tokenizer.encode(candles), again.encode(candles))
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(20))
    # The held-out loss before the first step, every 20 // 10 = 2 steps, and after the last.
    assert [r["step"] for r in records if "val_loss" in r] == [*range(0, 20, 2), 20]
    assert (tmp_path / "run" / "loss.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_config_presets_parse():
    from pathlib import Path

    presets = sorted((Path(__file__).parents[2] / "configs").glob("tokenize-*.yaml"))
    assert len(presets) == 3
    for path in presets:
        tokenizer_of(read(path))


def test_bad_data_raises_before_the_run_folder_exists(candles, tmp_path):
    from chaosfm.data import DataError

    path = tmp_path / "short.csv"
    candles.groupby("asset").head(10).to_csv(path, index=False)
    options = {k: v for k, v in TINY_FSQ.items() if k != "levels"}
    config = TokenizeConfig(data=[str(path)], levels=[4, 3, 2], options=options, steps=5, out=tmp_path / "run")
    with pytest.raises(DataError, match="training window"):
        run(config)
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


def test_analyze_a_bins_run_end_to_end(candles, tmp_path):
    from chaosfm.jobs.tokenize import AnalyzeConfig, analyze, read_analysis

    path = tmp_path / "candles.csv"
    candles.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    run(TokenizeConfig(data=[str(path)], tokenizer="bins", bins="quantile", vocab_size=18,
                       options={"context_length": 50}, cutoff="2001-09-28", out=run_dir, speed_repeats=1))
    horizon, embargo = 3, 4
    config = read_analysis(None, {"run": str(run_dir), "top_k": 4, "ngram": 2, "horizon": horizon,
                                  "embargo": embargo, "min_count": 3})
    report = analyze(config)
    out = run_dir / "analysis"
    assert verify_run(out)["command"] == "tokenize analyze"
    patterns = pd.read_csv(out / "patterns.csv")
    pd.testing.assert_frame_equal(patterns, report["patterns"], check_dtype=False)
    assert set(patterns["n"]) == {1, 2} and (patterns.groupby("n").size() <= 4).all()
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["horizon"] == horizon and saved["embargo"] == embargo and saved["move"] == "log return"

    # the codes, encoded by hand: rows up to the cutoff and rows after it as two frames
    tokenizer = load_tokenizer(run_dir)
    cutoff = pd.Timestamp("2001-09-28")
    train_tokens = tokenizer.tokens(candles.loc[candles["timestamp"] <= cutoff])
    after_tokens = tokenizer.tokens(candles.loc[candles["timestamp"] > cutoff])
    codes = np.r_[train_tokens["code"].to_numpy(), after_tokens["code"].to_numpy()]
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    assert saved["distribution"]["all"]["codes"] == len(candles)
    assert saved["distribution"]["all"]["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    assert saved["distribution"]["all"]["top_k_coverage"] == pytest.approx(np.sort(counts)[::-1][:4].sum() / len(codes))

    # the top 1-gram's moves, by hand: training ones end at or before the cutoff, fresh ones start
    # more than `embargo` rows after it
    top = patterns.loc[patterns["n"] == 1].iloc[0]
    code = int(top["pattern"])
    train_moves, fresh_moves = [], []
    for asset, part in candles.groupby("asset"):
        close = part["close"].to_numpy()
        stamps = part["timestamp"].to_numpy()
        last_seen = int(np.searchsorted(stamps, np.datetime64(cutoff), "right")) - 1
        own = pd.concat([train_tokens, after_tokens]).query("asset == @asset")["code"].to_numpy()
        for row in np.flatnonzero(own == code):
            if row + horizon >= len(close):
                continue
            move = np.log(close[row + horizon] / close[row])
            if row + horizon <= last_seen:
                train_moves.append(move)
            elif row - last_seen - 1 >= embargo:
                fresh_moves.append(move)
    assert top["train_count"] == len(train_moves) and top["train_mean"] == pytest.approx(np.mean(train_moves))
    assert top["fresh_count"] == len(fresh_moves) > 0
    assert top["fresh_mean"] == pytest.approx(np.mean(fresh_moves))

    with pytest.raises(ConfigError, match="not a tokenize run"):
        analyze(AnalyzeConfig(run=out))
    with pytest.raises(ConfigError, match="ngarm"):
        read_analysis(None, {"run": str(run_dir), "ngarm": 2})
