"""Helpers of the CLI jobs: the timestamps of a forecast's future steps."""

import pandas as pd

from chaosfm.pipelines import future_timestamps


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


def test_demo_models_are_the_shipped_configs():
    # The demo trains what configs/*.yaml describe (its own data options and fewer steps aside).
    from pathlib import Path

    import yaml

    from chaosfm.pipelines import demo_train_files

    configs = Path(__file__).parents[1] / "configs"
    names = {"sp500-gpt": "gpt-tiny", "sp500-mamba": "mamba-tiny",
             "lorenz-gpt": "lorenz-gpt", "lorenz-mamba": "lorenz-mamba"}
    files = demo_train_files(fast=False)
    assert set(files) == set(names)
    for run, config in names.items():
        shipped = yaml.safe_load((configs / f"{config}.yaml").read_text())
        demo = files[run][1].model_dump()
        assert demo["model"] == shipped["model"], run
        assert {k: v for k, v in demo["tokenizer"].items() if v is not None} == {
            **{"options": {}, "steps": 2000, "seed": 0}, **shipped["tokenizer"]}, run
        for key in ("steps", "batch_size", "learning_rate", "warmup_steps"):
            assert demo["train"][key] == shipped["train"][key], (run, key)
