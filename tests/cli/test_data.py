"""``chaosfm data check`` (``--write``, the read flags) and ``--repair`` through the commands that
read data: a newest-first export, refused with the flag that fixes it, then read."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from chaosfm.cli import main
from chaosfm.data import load


def newest_first(path, n=120, seed=0):
    """A close-only daily export, newest row first; returns the rows oldest first (the reference)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"Date": pd.date_range("2023-01-02", periods=n, freq="D").strftime("%Y-%m-%d"),
                          "Close": 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))})
    table.iloc[::-1].to_csv(path, index=False)
    return table


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_data_check_write_saves_the_repaired_frame_and_refuses_to_overwrite(tmp_path, capsys, suffix):
    source = tmp_path / "export.csv"
    table = newest_first(source, n=30)
    target = tmp_path / f"clean{suffix}"
    assert main(["data", "check", str(source), "--write", str(target)]) == 2  # not repaired: nothing written
    assert "--repair would sort" in capsys.readouterr().err and not target.exists()
    assert main(["data", "check", str(source), "--repair", "--write", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    written = pd.read_csv(target) if suffix == ".csv" else pd.read_parquet(target)
    assert list(written.columns) == ["asset", "timestamp", "close"]
    np.testing.assert_array_equal(written["close"].to_numpy(), table["Close"].to_numpy())
    again = load(target)  # the written file is valid as it is
    assert again["timestamp"].tolist() == pd.to_datetime(table["Date"]).tolist()
    before = target.read_bytes()
    assert main(["data", "check", str(source), "--repair", "--write", str(target)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["data", "check", str(source), "--repair", "--write", str(target), "--force"]) == 0
    assert main(["data", "check", str(source), "--repair", "--write", str(tmp_path / "clean.xlsx")]) == 2
    assert ".csv, .parquet, .pq" in capsys.readouterr().err


def test_data_check_reads_separator_decimal_and_day_first_flags(tmp_path, capsys):
    days = pd.date_range("2024-01-01", periods=20, freq="D")
    path = tmp_path / "eu.csv"
    pd.DataFrame({"Datum": days.strftime("%d/%m/%Y"), "close": np.linspace(1.5, 3.5, 20)}).rename(
        columns={"Datum": "date"}).to_csv(path, sep=";", decimal=",", index=False)
    assert main(["data", "check", str(path)]) == 2
    assert "--dayfirst" in capsys.readouterr().err
    target = tmp_path / "eu.parquet"
    assert main(["data", "check", str(path), "--dayfirst", "--sep", ";", "--decimal", ",", "--write", str(target)]) == 0
    written = pd.read_parquet(target)
    assert written["timestamp"].tolist() == days.tolist()
    np.testing.assert_allclose(written["close"].to_numpy(), np.linspace(1.5, 3.5, 20))
    assert main(["data", "check", str(path), "--date-format", "%d/%m/%Y"]) == 0


def test_evaluate_refuses_a_newest_first_file_then_repairs_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    source = tmp_path / "export.csv"
    newest_first(source)
    small = ["--models", "random_walk,last_value", "--horizon", "5", "--every", "10", "--num-samples", "8",
             "--max-windows", "3", "--set", "protocol.min_context=30", "--set", "protocol.context_length=30"]
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(source), *small, "--out", str(out)]) == 2
    assert "(--repair would sort the 120 rows oldest first)" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(source), *small, "--repair", "--out", str(out)]) == 0
    assert "repair: sorted the 120 row(s) oldest first" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["repair"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(next(iter(metrics["datasets"].values()))["compared"]["fresh"]["models"]) == {"random_walk", "last_value"}


def test_stream_repairs_a_newest_first_file_and_streams_it_oldest_first(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    source = tmp_path / "export.csv"
    table = newest_first(source, n=40)
    argv = ["stream", "--data", str(source), "--column", "close", "--no-compilation-cache", "--no-warm-up",
            "--set", "stream.predictor.dgm.fit_steps=0"]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "--repair would sort" in capsys.readouterr().err
    out = tmp_path / "stream"
    assert main([*argv, "--repair", "--out", str(out)]) == 0
    assert "repair: sorted the 40 row(s) oldest first" in capsys.readouterr().err
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == len(table) - 1  # the first value only starts the state
    assert json.loads((out / "metrics.json").read_text())["observations"] == len(table)
    stamps = predictions.filter(like="timestamp").iloc[:, 0]
    assert pd.to_datetime(stamps).is_monotonic_increasing


CONFIGS = __import__("pathlib").Path(__file__).parents[2] / "configs"


def _read_flag_cases(tmp_path):
    out, run = str(tmp_path / "out"), str(tmp_path / "run")
    top = lambda c: c  # noqa: E731 - the read keys are top-level keys of most configs
    return [
        ("evaluate", ["evaluate", "--data", "x.csv"], top),
        ("tokenize", ["tokenize", "--data", "x.csv"], top),
        ("train", ["train", "--config", str(CONFIGS / "lorenz-gpt.yaml"), "--data", "x.csv", "--out", out],
         lambda c: c.data),
        ("stage", ["stage", "pretrain", "--config", str(CONFIGS / "gpt-tiny.yaml"), "--data", "x.csv", "--out", out],
         lambda c: c.data),
        ("pretrain", ["pretrain", "--config", str(CONFIGS / "jepa-tiny.yaml"), "--data", "x.csv", "--out", out],
         lambda c: c.data),
        ("leakage", ["leakage", "--data", "x.csv"], top),
        ("tune", ["tune", "--data", "x.csv"], top),
        ("stream", ["stream", "--data", "x.csv", "--out", out], top),
        ("forecast", ["forecast", "--run", run, "--data", "x.csv", "--horizon", "3", "--out", out], top),
        ("mvx", ["mvx", "--run", run, "--data", "x.csv", "--out", out], top),
        ("agent.train", ["agent", "train", "--data", "x.csv"], top),
    ]


def test_every_command_that_takes_data_takes_the_read_flags_into_its_config(tmp_path, monkeypatch, capsys):
    import importlib

    flags = ["--repair", "--sep", ";", "--decimal", ",", "--dayfirst", "--date-format", "%d.%m.%Y"]
    for job, argv, section in _read_flag_cases(tmp_path):
        seen = {}

        def stand_in(config, *args, **kwargs):
            seen["config"] = config
            raise KeyboardInterrupt  # stops the command once it has its config

        module, _, name = job.partition(".")
        monkeypatch.setattr(importlib.import_module(f"chaosfm.jobs.{module}"), name or "run", stand_in)
        assert main([*argv, *flags]) == 130, (argv, capsys.readouterr().err)
        read = section(seen["config"])
        assert (read.repair, read.sep, read.decimal, read.dayfirst, read.date_format) == (
            True, ";", ",", True, "%d.%m.%Y"), job
        assert read.read_options() == {"repair": True, "sep": ";", "decimal": ",", "dayfirst": True,
                                       "date_format": "%d.%m.%Y"}
    capsys.readouterr()
