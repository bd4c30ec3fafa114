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
from chaosfm._four_stage import PipelineConfig, paired_table, read_pipeline_config, run_pipeline  # noqa: F401


class DatasetSpec(BaseModel):
    """One dataset of an evaluation; unset fields fall back to the evaluation's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="built-in name or path of a CSV/Parquet file")
    options: dict[str, Any] = Field(default_factory=dict, description="options for data.load")
    cutoff: str | float | None = None
    models: list[str] | None = None
    protocol: Protocol | None = None
    runs: list[str] = Field(
        default_factory=list, description="run folders of `chaosfm train` scored on this dataset only"
    )


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
    for forecaster in _runs(config, spec):
        columns = target_columns(frame)
        if forecaster.columns != columns:
            raise ConfigError(
                f"runs: {forecaster.run_dir} forecasts {forecaster.columns}, but {spec.name} is scored "
                f"on {columns}; evaluate it on data of the kind it was trained on"
            )
    return frame, _cutoff(frame, spec, config), names


def _runs(config: EvaluateConfig, spec: DatasetSpec) -> list[Any]:
    """One :class:`~chaosfm.evaluate.TokenForecaster` per run folder of the evaluation and of ``spec``.

    Raises ConfigError if a folder is not a run.
    """
    from chaosfm.evaluate import TokenForecaster

    forecasters = []
    for run in [*config.runs, *spec.runs]:
        if not Path(run).is_dir():
            raise ConfigError(f"runs: {run} is not a folder")
        if _is_jepa_run(run):  # a `chaosfm pretrain` run: frozen JEPA + ridge readout
            from chaosfm.evaluate import JEPAForecaster

            forecasters.append(JEPAForecaster(run, **config.model_options.get(Path(run).name, {})))
            continue
        forecasters.append(TokenForecaster(run, **config.model_options.get(Path(run).name, {})))
    return forecasters


def _is_jepa_run(run: str | Path) -> bool:
    import json

    meta = Path(run) / "meta.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("kind") == "jepa"
    except ValueError:
        return False


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
    forecasters.update({f.name: f for f in _runs(config, spec)})
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


def demo_config(out: Path = Path("runs/demo"), fast: bool = False, runs: dict[str, list[str]] | None = None) -> EvaluateConfig:
    """The main job: every baseline on ``sp500`` and ``lorenz63`` under the leakage protocol.

    ``fast`` scores fewer windows with fewer samples and a shorter trajectory (under 3 minutes on
    two CPU cores); the full demo takes longer and its intervals are tighter. ``runs`` maps a
    dataset name to run folders of ``chaosfm train`` scored beside the baselines on it.
    """
    runs = runs or {}
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
            DatasetSpec(name="sp500", cutoff=DEMO_MARKET_CUTOFF, protocol=market, runs=runs.get("sp500", [])),
            DatasetSpec(
                name="lorenz63",
                options=_demo_lorenz_options(fast),
                protocol=chaos,
                runs=runs.get("lorenz63", []),
            ),
        ],
        cutoff_fraction=DEMO_CUTOFF_FRACTION,
        out=out,
        title="chaosfm demo: baselines and tiny code models under the leakage protocol",
    )


DEMO_MARKET_CUTOFF = "2014-12-31"
DEMO_CUTOFF_FRACTION = 0.5


def _demo_lorenz_options(fast: bool) -> dict[str, Any]:
    return {"length": 7000 if fast else 12000}


def demo_train_files(fast: bool = False) -> dict[str, tuple[str, Any]]:
    """The demo's code models: run name -> (dataset it is scored on, its ``chaosfm train`` file).

    A tiny GPT and a tiny Mamba-2 over bins of the Lorenz-63 trajectory as in
    ``configs/lorenz-gpt.yaml`` / ``configs/lorenz-mamba.yaml``, and (not when ``fast``, to keep it
    under 3 minutes) over FSQ codes of the S&P 500 candles as in ``configs/gpt-tiny.yaml`` /
    ``configs/mamba-tiny.yaml``. Each is fenced at the demo's cutoff, so the evaluation's fresh
    windows are fresh for it too. The Mamba reuses the GPT's tokenizer (``tokenizer.path``).
    """
    from chaosfm.train import parse_train_run_file

    loop = {"batch_size": 16, "checkpoint_every": 1000, "log_every": 25, "seed": 0}
    market = {
        "data": {"names": ["sp500"], "cutoff": DEMO_MARKET_CUTOFF, "embargo": 5},
        "tokenizer": {"kind": "fsq", "options": {"levels": [4, 4, 4]}, "steps": 300 if fast else 600, "seed": 0},
        "model": {"size": "tiny", "d_model": 32, "n_layers": 2, "context_length": 64},
        # ~4000 training codes: longer runs memorise them and lose held-out perplexity.
        "train": {**loop, "steps": 150, "learning_rate": 0.002, "warmup_steps": 30, "weight_decay": 0.1},
    }
    chaos = {
        "data": {
            "names": ["lorenz63"],
            "options": _demo_lorenz_options(fast),
            "cutoff_fraction": DEMO_CUTOFF_FRACTION,
            "embargo": 50,
        },
        "tokenizer": {"kind": "bins", "options": {"kind": "quantile", "vocab_size": 130, "context_length": 512}},
        "model": {"size": "tiny", "d_model": 64, "n_layers": 2, "context_length": 96},
        "train": {**loop, "steps": 250 if fast else 600, "learning_rate": 0.003, "warmup_steps": 50},
    }
    files = {}
    chosen = [("lorenz63", "lorenz", chaos)] if fast else [("sp500", "sp500", market), ("lorenz63", "lorenz", chaos)]
    for dataset, prefix, base in chosen:
        for kind in ("gpt", "mamba"):
            model = {**base["model"], "kind": kind}
            if kind == "mamba" and dataset == "sp500":
                model["exo_clock"] = True  # realized volatility modulates dt, as in mamba-tiny.yaml
            data = {**base, "model": model}
            files[f"{prefix}-{kind}"] = (dataset, parse_train_run_file(data, f"demo {prefix}-{kind}"))
    return files


def demo_jepa_config() -> Any:
    """The demo's JEPA+CFM: ``configs/jepa-tiny.yaml`` on sp500 alone, fenced at the demo's cutoff."""
    from chaosfm.train import PretrainConfig

    return PretrainConfig.model_validate({
        "data": {"names": ["sp500"], "cutoff": DEMO_MARKET_CUTOFF, "embargo": 5},
        "model": {"context_length": 64, "d_model": 32, "n_layers": 2, "d_embed": 32, "d_pred": 16,
                  "cfm_weight": 1.0, "cfm_horizon": 5},
        "train": {"steps": 300, "batch_size": 16, "learning_rate": 0.002, "warmup_steps": 30,
                  "checkpoint_every": 300, "log_every": 25, "seed": 0},
    })


def run_demo(out: Path = Path("runs/demo"), fast: bool = False, *, models: bool = True) -> dict[str, Any]:
    """Train the demo's code models (unless ``models`` is False), then run the evaluation.

    See :func:`demo_config` and :func:`demo_train_files`; the trained runs go to ``out/models``
    (``out/models-fast`` with ``fast``). A run already there is resumed, so a second demo in the
    same folder reuses finished models. Returns the evaluation's metrics, with each run's held-out
    perplexity under ``code_models``.
    """
    from chaosfm.train import TOKENIZER_DIR, TokenizerSection, run_train_tokenized

    runs: dict[str, list[str]] = {}
    trained: dict[str, Any] = {}
    if models:
        shared: dict[str, Path] = {}  # dataset -> the tokenizer its first model fitted
        for name, (dataset, file) in demo_train_files(fast).items():
            run_dir = Path(out) / ("models-fast" if fast else "models") / name
            if dataset in shared:
                file = file.model_copy(update={"tokenizer": TokenizerSection(path=str(shared[dataset]))})
            result = run_train_tokenized(file, run_dir, resume=(run_dir / "config.yaml").is_file())
            shared.setdefault(dataset, run_dir / TOKENIZER_DIR)
            runs.setdefault(dataset, []).append(str(run_dir))
            trained[name] = {"dataset": dataset, "heldout": result.metrics.get("heldout")}
        if not fast:  # the tiny JEPA+CFM row (configs/jepa-tiny.yaml, fenced at the demo's cutoff)
            run_dir = Path(out) / "models" / "sp500-jepa-cfm"
            if not (run_dir / "meta.json").is_file():
                from chaosfm.train import run_pretrain

                run_pretrain(demo_jepa_config(), run_dir, resume=(run_dir / "config.yaml").is_file())
            runs.setdefault("sp500", []).append(str(run_dir))
    metrics = run_evaluate(demo_config(out, fast, runs))
    if trained:
        metrics["code_models"] = nan_to_none(trained)
        write_json(Path(out) / "metrics.json", metrics)
    return metrics


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
    drawn = generate(model, codes, n, temperature, top_k, key=jax.random.key(seed), exo=exo, num_samples=num_samples)
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
    forecast.timestamps = future_timestamps(part["timestamp"], horizon)
    table = forecast.to_frame(quantiles)
    table["asset"] = chosen
    atomic_write_text(Path(out), table.to_csv(index=False))
    return table
