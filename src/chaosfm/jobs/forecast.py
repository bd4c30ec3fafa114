"""``chaosfm forecast`` and ``chaosfm generate``: sample from a trained code-model run.

``generate`` continues a prompt of codes; ``forecast`` forecasts ``horizon`` rows after the last
row of one asset of a dataset and writes the mean and quantiles per step and column (CSV, or
Parquet when the file name ends in ``.parquet``), with the future timestamps filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text
from chaosfm._config import ConfigError
from chaosfm.jobs._common import load_data, pick_asset

__all__ = ["FLAGS", "ForecastConfig", "GenerateConfig", "forecast", "future_timestamps", "generate", "run"]

FLAGS = {"run_dir": "run"}
"""CLI flag -> config key."""

DEFAULT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


class GenerateConfig(BaseModel):
    """``chaosfm generate``: codes sampled after a prompt."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="run folder of `chaosfm train` or `chaosfm stage`")
    prompt: list[int] = Field(description="codes to continue")
    n: int = Field(50, ge=1, description="codes to generate")
    temperature: float = Field(1.0, ge=0, description="0 is greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely codes")
    num_samples: int = Field(1, ge=1, description="paths to sample")
    seed: int = 0

    @field_validator("prompt", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.replace(",", " ").split()]
            except ValueError:
                raise ValueError(f"expected integer codes separated by spaces, got {value!r}") from None
        return value


class ForecastConfig(BaseModel):
    """``chaosfm forecast``: a forecast after the last row of one asset, from a trained run."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="run folder of `chaosfm train` or `chaosfm stage`")
    data: str = Field(description="built-in name or CSV/Parquet path")
    horizon: int = Field(ge=1, description="steps to forecast")
    num_samples: int = Field(100, ge=1, description="sample paths")
    out: Path = Field(description="table of the mean and quantiles per step (.csv or .parquet)")
    asset: str | None = Field(None, description="asset of a multi-asset frame (default: the first)")
    context_length: int | None = Field(None, ge=1, description="rows of history to encode (default: all)")
    quantiles: list[float] = Field(default_factory=lambda: list(DEFAULT_QUANTILES), description="quantile levels")
    temperature: float = Field(1.0, ge=0)
    top_k: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("quantiles", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split()]
        levels = [float(v) for v in value]
        bad = [q for q in levels if not 0 < q < 1]
        if bad or not levels:
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {bad or levels}")
        return sorted(set(levels))


def generate(config: GenerateConfig) -> np.ndarray:
    """``(num_samples, n)`` codes sampled after ``config.prompt`` from a trained run's model.

    A model with ``exo_clock`` is given the training mean of its exogenous input (0 after
    standardisation) over the prompt: a bare code prompt carries no volatility.

    Raises:
        ConfigError: an empty prompt or a code outside the vocabulary.
    """
    import jax
    import jax.numpy as jnp

    from chaosfm.models import generate as sample
    from chaosfm.train import load_run

    model, _ = load_run(config.run)
    vocab = int(model.config.vocab_size)
    if not config.prompt:
        raise ConfigError("--prompt: give at least one code, e.g. \"80 81 83\"")
    bad = [c for c in config.prompt if not 0 <= c < vocab]
    if bad:
        raise ConfigError(f"--prompt: code(s) {bad} outside the model's vocabulary 0..{vocab - 1}")
    codes = jnp.asarray(config.prompt, jnp.int32)
    exo = jnp.zeros(codes.shape, jnp.float32) if model.uses_exo else None
    drawn = sample(model, codes, config.n, config.temperature, config.top_k, key=jax.random.key(config.seed), exo=exo,
                   num_samples=config.num_samples)
    return np.asarray(drawn)


def future_timestamps(stamps: pd.Series, horizon: int) -> list[Any]:
    """The ``horizon`` timestamps after ``stamps``: business days after daily dates (holidays are
    not known), calendar months after monthly ones, else the median recent step."""
    last = stamps.iloc[-1]
    if isinstance(last, pd.Timestamp):
        recent = pd.DatetimeIndex(stamps.iloc[-30:])
        spacing = recent.to_series().diff().median()
        if pd.isna(spacing):
            return [None] * horizon
        if pd.Timedelta(hours=20) <= spacing <= pd.Timedelta(days=4):  # daily bars with weekends
            offset = pd.offsets.BDay()
        elif spacing >= pd.Timedelta(days=28):  # monthly or coarser bars: calendar months
            offset = pd.DateOffset(months=max(1, round(spacing / pd.Timedelta(days=30.44))))
        else:
            offset = spacing
        return list(pd.date_range(last, periods=horizon + 1, freq=offset)[1:])
    spacing = float(pd.Series(stamps.iloc[-30:], dtype=float).diff().median()) if len(stamps) > 1 else float("nan")
    if not pd.notna(spacing):
        return [None] * horizon
    return [round(float(last) + spacing * (h + 1), 10) for h in range(horizon)]  # no 200.00000000000003


def forecast(config: ForecastConfig) -> pd.DataFrame:
    """Forecast ``horizon`` steps after the last row of ``data`` (one asset) with a trained run;
    write the quantile table (``asset, step, timestamp, column, mean, q0.05, ...``) to ``out``.

    Raises:
        ConfigError, DataError: bad arguments or data, before sampling.
    """
    import jax

    from chaosfm.forecasters import TokenForecaster

    forecaster = TokenForecaster(config.run, temperature=config.temperature, top_k=config.top_k)
    frame = load_data(config.data)
    missing = [c for c in forecaster.columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"--data {config.data}: lacks column(s) {missing} the run {config.run} forecasts")
    part = pick_asset(frame, config.asset, f"--data {config.data}")
    if config.context_length is not None:
        part = part.iloc[-config.context_length :]
    result = forecaster.forecast(part, config.horizon, config.num_samples, key=jax.random.key(config.seed))
    result.timestamps = future_timestamps(part["timestamp"], config.horizon)
    table = result.to_frame(config.quantiles)
    table["asset"] = str(part["asset"].iloc[0])
    write_table(table, Path(config.out))
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    """CSV, or Parquet when ``path`` ends in ``.parquet`` (what pandas and Arrow read)."""
    if path.suffix.lower() == ".parquet":
        atomic_write_bytes(path, table.to_parquet(index=False))
    else:
        atomic_write_text(path, table.to_csv(index=False))


run = forecast
"""The ``chaosfm forecast`` job."""
