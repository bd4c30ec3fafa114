"""``chaosfm forecast`` and ``chaosfm generate``.

``forecast`` fits any forecaster on a whole dataset and forecasts ``horizon`` rows after the last
row of each asset: a name of the forecaster registry (``garch``, ``ar``, ``context_parroting``,
``esn``, ``online_predictor``, ...) or a run folder (``chaosfm train``, ``stage``, ``pretrain``),
through :class:`chaosfm.forecasters.Forecaster`. It writes the mean and quantiles per asset, step
and column with the future timestamps, as CSV or Parquet (by the file's extension).
``generate`` continues a prompt of codes with a trained code model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text
from chaosfm._config import ConfigError, did_you_mean
from chaosfm._progress import status
from chaosfm.data import DataError, trained_through_to_json
from chaosfm.forecasters import FORECASTERS, Forecaster, forecast_table, future_timestamps  # noqa: F401 - re-exported
from chaosfm.jobs._common import ReadOptions, load_data, out_field, pick_asset

__all__ = ["FLAGS", "TABLE_FORMATS", "ForecastConfig", "GenerateConfig", "forecast", "future_timestamps", "generate",
           "build_forecaster", "run", "write_table"]

FLAGS = {"run_dir": "run"}
"""CLI flag -> config key."""

DEFAULT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
TABLE_FORMATS = (".csv", ".parquet")
"""The extensions a forecast table may be written as."""


def _table_format(path: Path, key: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ConfigError(
            f"{key} {path}: unknown extension {Path(path).suffix or '(none)'!r}; the table is written as "
            + " or ".join(TABLE_FORMATS)
        )
    return suffix


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


class ForecastConfig(ReadOptions):
    """``chaosfm forecast``: a forecast after the last row of each asset, by any forecaster."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="a forecaster name (chaosfm.forecasters.FORECASTERS) or a run folder"
    )
    run: Path | None = Field(None, description="a run folder (the same as model: RUN_DIR)")
    model_options: dict[str, Any] = Field(default_factory=dict, description="options of the forecaster")
    data: str = Field(description="built-in name or CSV/Parquet path")
    horizon: int = Field(ge=1, description="steps to forecast")
    num_samples: int = Field(100, ge=1, description="sample paths")
    out: Path = out_field("forecast", "table of the mean and quantiles per step (.csv or .parquet)", ".csv")
    asset: str | None = Field(None, description="the asset to forecast (default: every asset)")
    context_length: int | None = Field(None, ge=1, description="rows of history to forecast from (default: all)")
    quantiles: list[float] = Field(default_factory=lambda: list(DEFAULT_QUANTILES), description="quantile levels")
    temperature: float | None = Field(None, ge=0, description="a code model's sampling temperature (default 1)")
    top_k: int | None = Field(None, ge=1, description="a code model samples among its k most likely codes")
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

    @model_validator(mode="after")
    def _one_model(self) -> "ForecastConfig":
        if (self.model is None) == (self.run is None):
            raise ValueError(
                "give the forecaster once: --model NAME_OR_RUN_DIR (e.g. garch, ar, context_parroting, or a run "
                "folder), or --run RUN_DIR" + ("" if self.model is None else f"; got both {self.model} and {self.run}")
            )
        return self


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


def build_forecaster(config: ForecastConfig) -> Any:
    """The :class:`~chaosfm.forecasters.Forecaster` ``config`` names: a registry name, else a run
    folder (``--run``, or ``--model`` naming a folder), with ``model_options`` and, when given,
    ``temperature`` and ``top_k``.

    Raises:
        ConfigError: neither a registry name nor a run folder, or an option it does not take.
    """
    options = dict(config.model_options)
    options.update({k: v for k, v in (("temperature", config.temperature), ("top_k", config.top_k)) if v is not None})
    if config.run is None and config.model in FORECASTERS:
        try:
            return Forecaster.from_name(config.model, **options)
        except ConfigError as error:
            raise ConfigError(f"--model {config.model}: {error}") from None
    if config.run is None and not Path(config.model).is_dir():
        raise ConfigError(
            f"--model {config.model}: neither a forecaster name nor a run folder{did_you_mean(config.model, FORECASTERS)}; "
            f"names: {', '.join(FORECASTERS)}"
        )
    return Forecaster.load(config.run if config.run is not None else Path(config.model), **options)


def forecast(config: ForecastConfig) -> pd.DataFrame:
    """Fit the forecaster on every row of ``data`` and forecast ``horizon`` steps after the last
    row of each asset (or of ``asset``); write the table (``asset, timestamp, step, column, mean,
    0.05, ...``: :func:`chaosfm.forecasters.forecast_table`) to ``out``.

    A Parquet table carries the forecaster's ``trained_through`` in its metadata
    (``pd.read_parquet(out).attrs["trained_through"]``).

    Raises:
        ConfigError, DataError: bad arguments or data (an extension of ``out`` other than
            ``.csv`` or ``.parquet``, first), before sampling.
    """
    _table_format(config.out, "--out")  # before anything is loaded or fitted
    forecaster = build_forecaster(config)
    with status(f"loading {config.data}"):
        frame = load_data(config.data, read=config)
    part = frame if config.asset is None else pick_asset(frame, config.asset, f"--data {config.data}")
    try:
        forecaster.fit(frame)  # a forecast of the future: every row of the file is past
    except (ConfigError, DataError):
        raise
    except ValueError as error:  # a forecaster that cannot fit these rows (GARCH on a trajectory)
        raise ConfigError(f"--model {forecaster.name} cannot fit --data {config.data}: {error}") from None
    forecasts = forecaster.forecast(part, config.horizon, config.num_samples, seed=config.seed,
                                    context_length=config.context_length)
    table = forecast_table(forecasts, config.quantiles)
    table.attrs["model"] = forecaster.name
    table.attrs["trained_through"] = trained_through_to_json(forecaster.trained_through)
    write_table(table, Path(config.out))
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    """CSV for ``.csv``, Parquet for ``.parquet`` (what pandas and Arrow read; ``table.attrs``
    go into its metadata).

    Raises:
        ConfigError: any other extension, naming it and the allowed ones.
    """
    if _table_format(path, "--out") == ".parquet":
        atomic_write_bytes(path, table.to_parquet(index=False))
    else:
        atomic_write_text(path, table.to_csv(index=False))


run = forecast
"""The ``chaosfm forecast`` job."""
