"""``chaosfm forecast``: the timestamps of a forecast's future steps."""

import pandas as pd

from chaosfm.jobs.forecast import future_timestamps


def test_daily_bars_continue_on_business_days():
    stamps = pd.Series(pd.bdate_range("2018-12-03", "2018-12-28"))  # ends on a Friday
    got = future_timestamps(stamps, 3)
    assert got == [pd.Timestamp("2018-12-31"), pd.Timestamp("2019-01-01"), pd.Timestamp("2019-01-02")]


def test_hourly_and_numeric_time_continue_at_their_spacing():
    hourly = pd.Series(pd.date_range("2024-01-01", periods=48, freq="h"))
    assert future_timestamps(hourly, 2) == [pd.Timestamp("2024-01-03 00:00"), pd.Timestamp("2024-01-03 01:00")]
    numeric = pd.Series([0.0, 0.01, 0.02, 0.03])
    got = future_timestamps(numeric, 2)
    assert abs(got[0] - 0.04) < 1e-12 and abs(got[1] - 0.05) < 1e-12
    assert future_timestamps(pd.Series([5.0]), 2) == [None, None]


def test_monthly_bars_continue_by_calendar_month():
    monthly = pd.Series(pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]))
    assert future_timestamps(monthly, 1)[0].month == 5


def test_the_table_is_parquet_for_a_parquet_file_and_csv_otherwise(tmp_path):
    from chaosfm.jobs.forecast import write_table

    table = pd.DataFrame({"asset": ["a", "a"], "step": [1, 2], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                          "column": ["close", "close"], "mean": [1.0, 2.0], "q0.5": [1.0, 2.5]})
    write_table(table, tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), table, check_dtype=False)
    write_table(table, tmp_path / "f.csv")
    assert (tmp_path / "f.csv").read_text().splitlines()[0] == "asset,step,timestamp,column,mean,q0.5"


# ---- chaosfm forecast --model NAME|RUN_DIR, end to end through the CLI -----------------------------

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from chaosfm.cli._main import main  # noqa: E402
from chaosfm.data import load, validate  # noqa: E402
from chaosfm.forecasters import Garch, TokenForecaster, series_key  # noqa: E402

LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def closes_csv(tmp_path_factory):
    """The last 400 daily candles of sp500 and nasdaq, one CSV."""
    frame = load("sp500,nasdaq")
    frame = pd.concat([part.iloc[-400:] for _, part in frame.groupby("asset", sort=False)], ignore_index=True)
    path = tmp_path_factory.mktemp("data") / "two.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.fixture(scope="module")
def lorenz_csv(tmp_path_factory):
    """600 rows of lorenz63, one CSV."""
    frame = load("lorenz63", length=600)
    path = tmp_path_factory.mktemp("data") / "lorenz.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _quantiles(samples):
    """``(H, 1 + Q)``: the mean and quantiles of one channel's samples ``(S, H)``."""
    return np.column_stack([samples.mean(axis=0), np.quantile(samples, LEVELS, axis=0).T])


def test_cli_forecast_with_a_registry_name_writes_parquet_of_the_forecasters_numbers(closes_csv, tmp_path):
    path, frame = closes_csv
    out = tmp_path / "fc.parquet"
    assert main(["forecast", "--model", "garch", "--data", str(path), "--horizon", "5", "--quantiles", "0.1,0.5,0.9",
                 "--num-samples", "64", "--seed", "3", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == ["asset", "timestamp", "step", "column", "mean", "0.1", "0.5", "0.9"]
    assert table["asset"].tolist() == ["nasdaq"] * 5 + ["sp500"] * 5  # every asset by default
    assert table["step"].tolist() == [1, 2, 3, 4, 5] * 2 and set(table["column"]) == {"close"}
    # The reference: GARCH fitted on the whole file, each asset's forecast drawn from its own key.
    garch = Garch().fit(validate(frame))
    for asset, part in validate(frame).groupby("asset", sort=False):
        part = part.reset_index(drop=True)
        samples = garch.forecast(part, 5, 64, key=series_key(jax.random.key(3), asset)).samples[:, :, 0]
        rows = table[table["asset"] == asset]
        np.testing.assert_allclose(rows[["mean", "0.1", "0.5", "0.9"]].to_numpy(), _quantiles(samples), rtol=1e-12)
        last = part["timestamp"].iloc[-1]
        assert list(rows["timestamp"]) == list(pd.bdate_range(last + pd.Timedelta(days=1), periods=5))
    assert table.attrs["trained_through"] == {"nasdaq": "2018-12-31T00:00:00", "sp500": "2018-12-31T00:00:00"}

    # --asset picks one; CSV holds the same numbers.
    csv = tmp_path / "fc.csv"
    assert main(["forecast", "--model", "garch", "--data", str(path), "--asset", "sp500", "--horizon", "5",
                 "--quantiles", "0.1,0.5,0.9", "--num-samples", "64", "--seed", "3", "--out", str(csv)]) == 0
    one = pd.read_csv(csv)
    assert one["asset"].unique().tolist() == ["sp500"]
    np.testing.assert_allclose(one[["mean", "0.1", "0.5", "0.9"]].to_numpy(),
                               table[table["asset"] == "sp500"][["mean", "0.1", "0.5", "0.9"]].to_numpy(), rtol=1e-12)


def test_cli_forecast_refuses_an_unknown_extension_a_bad_model_and_a_model_that_cannot_fit(closes_csv, tmp_path,
                                                                                          capsys):
    path, _ = closes_csv
    trajectory = tmp_path / "wave.csv"  # a state variable of both signs: GARCH models prices only
    stamps = np.arange(300) * 0.01
    pd.DataFrame({"timestamp": stamps, "x0": np.sin(stamps * 7)}).to_csv(trajectory, index=False)
    base = ["forecast", "--data", str(path), "--horizon", "3"]
    assert main([*base, "--model", "garch", "--out", str(tmp_path / "fc.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "unknown extension '.xlsx'" in err and ".csv or .parquet" in err
    assert not (tmp_path / "fc.xlsx").exists()
    assert main([*base, "--model", "garhc", "--out", str(tmp_path / "fc.csv")]) == 2
    assert "neither a forecaster name nor a run folder; did you mean 'garch'?; names: " in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "fc.csv")]) == 2
    assert "--model NAME_OR_RUN_DIR" in capsys.readouterr().err
    assert main(["forecast", "--data", str(trajectory), "--horizon", "3", "--model", "garch",
                 "--out", str(tmp_path / "fc.csv")]) == 2
    assert "wave.csv: Garch supports market frames" in capsys.readouterr().err
    assert main([*base, "--model", "ar", "--set", "model_options.ordr=2", "--out", str(tmp_path / "fc.csv")]) == 2
    assert "does not take option(s) ['ordr']" in capsys.readouterr().err
    assert not (tmp_path / "fc.csv").exists()


def test_write_table_names_a_bad_extension(tmp_path):
    from chaosfm._config import ConfigError
    from chaosfm.jobs.forecast import write_table

    with pytest.raises(ConfigError, match=r"unknown extension '\.json'; the table is written as \.csv or \.parquet"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "f.json")


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):
    """A tiny GPT over bins of lorenz63 (3 steps): a run folder of `chaosfm train`."""
    from chaosfm.jobs import train as train_job

    out = tmp_path_factory.mktemp("run") / "run"
    train_job.run(train_job.parse_train_run_file({
        "data": {"names": ["lorenz63"], "options": {"length": 600}, "embargo": 5},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "model": {"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1},
        "out": str(out),
    }))
    return out


@pytest.mark.slow  # trains a tiny GPT first (about 25 s on 2 shared cores)
def test_cli_forecast_with_a_run_folder_as_model_or_run(code_run, lorenz_csv, tmp_path):
    data, frame = lorenz_csv
    tables = {}
    for flag in ("--model", "--run"):
        out = tmp_path / f"fc{flag}.csv"
        assert main(["forecast", flag, str(code_run), "--data", str(data), "--horizon", "4", "--num-samples", "8",
                     "--context-length", "100", "--quantiles", "0.1,0.5,0.9", "--seed", "2", "--out", str(out)]) == 0
        tables[flag] = pd.read_csv(out)
    pd.testing.assert_frame_equal(tables["--model"], tables["--run"])
    table = tables["--model"]
    assert list(table.columns) == ["asset", "timestamp", "step", "column", "mean", "0.1", "0.5", "0.9"]
    assert table["column"].tolist() == ["x0", "x1", "x2"] * 4
    samples = TokenForecaster(code_run).forecast(
        validate(pd.read_csv(data)).iloc[-100:], 4, 8, key=series_key(jax.random.key(2), "lorenz63")
    ).samples  # (S, H, C)
    for c, column in enumerate(["x0", "x1", "x2"]):
        rows = table[table["column"] == column]
        np.testing.assert_allclose(rows[["mean", "0.1", "0.5", "0.9"]].to_numpy(), _quantiles(samples[:, :, c]),
                                   rtol=1e-9)
    step = frame["timestamp"].iloc[-1] - frame["timestamp"].iloc[-2]
    np.testing.assert_allclose(table["timestamp"].to_numpy()[::3], frame["timestamp"].iloc[-1] + step * np.arange(1, 5))
