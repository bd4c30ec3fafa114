"""The jobs behind the CLI commands: each takes a config object and writes a run folder.

``run_generate`` and ``run_forecast`` sample from a run of ``chaosfm train``.
``run_evaluate`` fits forecasters on every dataset up to a cutoff, scores them under the leakage
protocol and writes ``metrics.json``, ``scores.parquet``, ``report.html``, ``config.yaml`` and
``meta.json``. ``run_demo`` is the same on ``sp500`` and ``lorenz63`` with every baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, write_json, write_meta, write_yaml
from chaosfm._config import ConfigError
from chaosfm.data import (
    DataError,
    frame_kind,
    load,
    merge_trained_through,
    target_columns,
    trained_through_to_json,
)
from chaosfm.data._fence import as_timestamp_like
from chaosfm.evaluate import (
    BASELINES,
    Protocol,
    Results,
    evaluate,
    fit_through,
    make_baseline,
    nan_to_none,
)
from chaosfm.report import dataset_section, write_report


class DatasetSpec(BaseModel):
    """One dataset of an evaluation; unset fields fall back to the evaluation's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="built-in name or path of a CSV/Parquet file")
    options: dict[str, Any] = Field(default_factory=dict, description="options for data.load")
    cutoff: str | float | None = None
    models: list[str] | None = None
    protocol: Protocol | None = None


class EvaluateConfig(BaseModel):
    """``chaosfm evaluate``: which data, which models, where the cutoff is, how to score."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec]
    models: list[str] | None = Field(
        None, description="model names; default: every baseline that supports the data's kind"
    )
    cutoff: str | float | None = Field(
        None, description="last timestamp models may fit on; default: at cutoff_fraction"
    )
    cutoff_fraction: float = Field(0.7, gt=0, lt=1)
    protocol: Protocol = Field(default_factory=Protocol)
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    runs: list[str] = Field(
        default_factory=list, description="run folders of `chaosfm train`; each adds its forecaster"
    )
    out: Path = Path("runs/evaluate")
    title: str = "chaosfm evaluation"


DEFAULT_MODELS = {
    "market": ["random_walk", "garch", "ar", "seasonal_naive", "context_parroting", "last_value"],
    # A seasonal lag means nothing for a chaotic flow; GARCH needs prices.
    "trajectory": ["context_parroting", "ar", "random_walk", "last_value"],
}


def _default_models(kind: str) -> list[str]:
    return list(DEFAULT_MODELS[kind])


def _cutoff(frame: pd.DataFrame, spec: DatasetSpec, config: EvaluateConfig) -> Any:
    chosen = spec.cutoff if spec.cutoff is not None else config.cutoff
    first = frame["timestamp"].iloc[0]
    if chosen is not None:
        try:
            return as_timestamp_like(chosen, first)
        except DataError:
            what = "dates" if isinstance(first, pd.Timestamp) else "numbers"
            raise ConfigError(
                f"dataset {spec.name}: cutoff {chosen!r} cannot be compared with its timestamps, "
                f"which are {what} (e.g. {first!s}); give each dataset its own cutoff in a config"
            ) from None
    first_asset = frame[frame["asset"] == frame["asset"].iloc[0]]
    return first_asset["timestamp"].iloc[int(len(first_asset) * config.cutoff_fraction)]


def prepare_dataset(spec: DatasetSpec, config: EvaluateConfig) -> tuple[pd.DataFrame, Any, list[str]]:
    """Load a dataset and resolve its cutoff and models, before any slow work starts."""
    frame = load(spec.name, **spec.options)
    kind = frame_kind(frame)
    names = spec.models or config.models or _default_models(kind)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; known: {', '.join(BASELINES)}")
    unsupported = [n for n in names if kind not in BASELINES[n].kinds]
    if unsupported:
        raise ConfigError(f"model(s) {unsupported} do not support {kind} data ({spec.name})")
    for name in names:
        _make(name, config)  # a bad option fails here, before any slow work
    for forecaster in _runs(config):
        columns = target_columns(frame)
        if forecaster.columns != columns:
            raise ConfigError(
                f"runs: {forecaster.run_dir} forecasts {forecaster.columns}, but {spec.name} is scored "
                f"on {columns}; evaluate it on data of the kind it was trained on"
            )
    return frame, _cutoff(frame, spec, config), names


def _runs(config: EvaluateConfig) -> list[Any]:
    """One :class:`~chaosfm.evaluate.TokenForecaster` per run folder (ConfigError if one is not a run)."""
    from chaosfm.evaluate import TokenForecaster

    forecasters = []
    for run in config.runs:
        if not Path(run).is_dir():
            raise ConfigError(f"runs: {run} is not a folder")
        forecasters.append(TokenForecaster(run, **config.model_options.get(Path(run).name, {})))
    return forecasters


def _make(name: str, config: EvaluateConfig) -> Any:
    try:
        return make_baseline(name, **config.model_options.get(name, {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model_options.{name}: {error}") from None


def evaluate_dataset(
    spec: DatasetSpec, config: EvaluateConfig, prepared: tuple[pd.DataFrame, Any, list[str]] | None = None
) -> tuple[pd.DataFrame, Results, dict]:
    """Fit through the cutoff and score one dataset."""
    frame, cutoff, names = prepared or prepare_dataset(spec, config)
    forecasters = {name: _make(name, config) for name in names}
    forecasters.update({f.name: f for f in _runs(config)})
    protocol = spec.protocol or config.protocol
    started = time.perf_counter()
    fit_through(forecasters, frame, cutoff, protocol.embargo)
    results = evaluate(forecasters, frame, protocol, cutoff=cutoff)
    seen = merge_trained_through(*(f.trained_through for f in forecasters.values()))
    info = {"seconds": time.perf_counter() - started, "trained_through": trained_through_to_json(seen)}
    return frame, results, info


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Run an evaluation and write its run folder; return the ``metrics.json`` content."""
    metrics: dict[str, Any] = {"datasets": {}}
    sections: list[str] = []
    tables: list[pd.DataFrame] = []
    trained: dict[str, Any] = {}
    prepared = [prepare_dataset(spec, config) for spec in config.datasets]
    out = Path(config.out)  # created only once every dataset, cutoff and model is known good
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", config.model_dump(mode="json"))
    for spec, ready in zip(config.datasets, prepared):
        frame, results, info = evaluate_dataset(spec, config, ready)
        name = results.dataset
        metrics["datasets"][name] = results.to_dict()
        metrics["datasets"][name]["seconds"] = round(info["seconds"], 2)
        trained[name] = info["trained_through"]
        sections.append(dataset_section(name, frame, results, target_columns(frame)))
        table = results.scores.copy()
        table.insert(0, "dataset", name)
        table["origin"] = table["origin"].astype(str)
        tables.append(table)
    metrics = nan_to_none(metrics)
    write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "scores.parquet", pd.concat(tables, ignore_index=True).to_parquet(index=False))
    write_report(out / "report.html", config.title, sections)
    write_meta(out, seed=config.protocol.seed, trained_through=trained)
    return metrics


def demo_config(out: Path = Path("runs/demo"), fast: bool = False) -> EvaluateConfig:
    """The main job: every baseline on ``sp500`` and ``lorenz63`` under the leakage protocol.

    ``fast`` scores fewer windows with fewer samples and a shorter trajectory (under 3 minutes on
    two CPU cores); the full demo takes longer and its intervals are tighter.
    """
    market = Protocol(
        horizon=5,
        num_samples=64 if fast else 200,
        context_length=750,
        min_context=500,
        step=20 if fast else 5,
        embargo=5,
    )
    chaos = Protocol(
        horizon=150,
        num_samples=16 if fast else 32,
        context_length=3000,
        min_context=2000,
        step=150 if fast else 50,
        embargo=150,
        max_windows=None,
    )
    return EvaluateConfig(
        datasets=[
            DatasetSpec(name="sp500", cutoff="2014-12-31", protocol=market),
            DatasetSpec(
                name="lorenz63",
                options={"length": 7000 if fast else 12000},
                protocol=chaos,
            ),
        ],
        cutoff_fraction=0.5,
        out=out,
        title="chaosfm demo: baselines under the leakage protocol",
    )


def run_demo(out: Path = Path("runs/demo"), fast: bool = False) -> dict[str, Any]:
    """Run the demo (see :func:`demo_config`) and return its metrics."""
    return run_evaluate(demo_config(out, fast))


def run_generate(
    run_dir: str | Path,
    prompt: list[int],
    n: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    num_samples: int = 1,
    seed: int = 0,
) -> Any:
    """``(num_samples, n)`` codes sampled after ``prompt`` from a trained run's model.

    A model with ``exo_clock`` is given the training mean of its exogenous input (0 after
    standardisation) over the prompt: a bare code prompt carries no volatility.

    Raises:
        ConfigError: an empty prompt, a code outside the vocabulary, a bad count or temperature.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from chaosfm.models import generate
    from chaosfm.train import load_run

    model, _ = load_run(run_dir)
    vocab = int(model.config.vocab_size)
    if not prompt:
        raise ConfigError("--prompt: give at least one code, e.g. \"80 81 83\"")
    bad = [c for c in prompt if not 0 <= c < vocab]
    if bad:
        raise ConfigError(f"--prompt: code(s) {bad} outside the model's vocabulary 0..{vocab - 1}")
    for name, value, low in (("-n", n, 1), ("--num-samples", num_samples, 1), ("--top-k", top_k or 1, 1)):
        if value < low:
            raise ConfigError(f"{name}: must be >= {low}, got {value}")
    if temperature < 0:
        raise ConfigError(f"--temperature: must be >= 0, got {temperature}")
    codes = jnp.asarray(prompt, jnp.int32)
    exo = jnp.zeros(codes.shape, jnp.float32) if model.uses_exo else None
    keys = jax.random.split(jax.random.key(seed), num_samples)
    drawn = jax.vmap(lambda k: generate(model, codes, n, temperature, top_k, key=k, exo=exo))(keys)
    return np.asarray(drawn)


def run_forecast(
    run_dir: str | Path,
    data: str,
    horizon: int,
    num_samples: int,
    out: str | Path,
    *,
    asset: str | None = None,
    context_length: int | None = None,
    quantiles: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95),
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Forecast ``horizon`` steps after the last row of ``data`` (one asset) with a trained run;
    write the quantile table (``asset, step, timestamp, column, mean, q0.05, ...``) to ``out``.

    Raises:
        ConfigError, DataError: bad arguments or data, before sampling.
    """
    import jax

    from chaosfm._artifacts import atomic_write_text
    from chaosfm.evaluate import TokenForecaster

    if horizon < 1 or num_samples < 1:
        raise ConfigError(f"--horizon and --num-samples must be >= 1, got {horizon}, {num_samples}")
    forecaster = TokenForecaster(run_dir, temperature=temperature, top_k=top_k)
    frame = load(data)
    names = [str(a) for a in frame["asset"].unique()]
    chosen = asset or names[0]
    if chosen not in names:
        raise ConfigError(f"--asset {chosen!r} is not in {data}; assets: {names}")
    missing = [c for c in forecaster.columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"--data {data}: lacks column(s) {missing} the run {run_dir} forecasts")
    part = frame[frame["asset"].astype(str) == chosen].reset_index(drop=True)
    if context_length is not None:
        part = part.iloc[-context_length:]
    forecast = forecaster.forecast(part, horizon, num_samples, key=jax.random.key(seed))
    table = forecast.to_frame(quantiles)
    table["asset"] = chosen
    atomic_write_text(Path(out), table.to_csv(index=False))
    return table
