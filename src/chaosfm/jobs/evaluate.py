"""``chaosfm evaluate``: fit forecasters on every dataset up to a cutoff and score them under the
leakage protocol.

Baselines are named (``--models``); trained models come as run folders (``--run``: a run of
``chaosfm train``, ``stage`` or ``pretrain``, loaded by :func:`chaosfm.forecasters.load_forecaster`).
Each dataset is fenced by the one cutoff rule (one timestamp, one per asset, or each asset's row at
``cutoff_fraction``). :func:`run` writes ``metrics.json``, ``scores.parquet``, ``forecasts.parquet``
(every scored forecast: the observed value, point, mean, median and quantiles per step and column),
``report.html``, ``table.md`` (the fresh comparison as markdown), ``config.yaml`` and ``meta.json``.

Valid prediction time needs the largest Lyapunov exponent and the time per row, ``dt``: the
config's (``--lyapunov``, ``--dt``) over the data's (a built-in system's, a file's ``NAME.json``
sidecar), ``dt`` else from evenly spaced numeric timestamps (:func:`chaosfm.evaluate.vpt_clock`).
A trajectory without an exponent is still scored, with VPT NaN and a warning that says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, write_json
from chaosfm._config import ConfigError, did_you_mean, enable_x64, read_config
from chaosfm._progress import say
from chaosfm.data import (
    DataError,
    frame_kind,
    merge_trained_through,
    target_columns,
    trained_through,
    trained_through_to_json,
)
from chaosfm.evaluate import (
    Protocol,
    Results,
    window_class_at,
    cutoff_to_json,
    evaluate,
    fit_through,
    is_vpt,
    resolve_scores,
    vpt_clock,
)
from chaosfm.forecasters import FORECASTERS, ConformalForecaster, load_forecaster, make_forecaster
from chaosfm.jobs._common import (
    DEFAULT_CUTOFF_FRACTION,
    Cutoff,
    ReadOptions,
    available_memory,
    finish_run,
    load_data,
    out_field,
    resolve_fence,
    write_config,
)
from chaosfm.report import dataset_section, evaluation_markdown, write_report

__all__ = ["DEFAULT_MODELS", "FLAGS", "DatasetSpec", "EvaluateConfig", "read", "run", "write_forecasts"]

FLAGS = {
    **{name: f"protocol.{name}" for name in
       ("horizon", "num_samples", "embargo", "max_windows", "seed", "context_length", "dt")},
    "every": "protocol.step",
    "lyapunov": "protocol.lyapunov_exponent",
}
"""CLI flag -> config key (protocol flags; the rest are top-level keys of the same name)."""


class DatasetSpec(BaseModel):
    """One dataset of an evaluation; unset fields fall back to the evaluation's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="built-in name or path of a CSV/Parquet file")
    options: dict[str, Any] = Field(default_factory=dict, description="options for data.load")
    cutoff: Cutoff = None
    models: list[str] | None = None
    protocol: Protocol | None = None
    runs: list[str] = Field(
        default_factory=list, description="run folders of `chaosfm train` scored on this dataset only"
    )


class EvaluateConfig(ReadOptions):
    """``chaosfm evaluate``: which data, which models, where the cutoff is, how to score."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec]
    models: list[str] | None = Field(
        None, description="model names; default: every baseline that supports the data's kind"
    )
    cutoff: Cutoff = Field(
        None, description="last timestamp models may fit on (or NAME=DATE,...); default: at cutoff_fraction"
    )
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    protocol: Protocol = Field(default_factory=Protocol)
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    runs: list[str] = Field(
        default_factory=list, description="run folders of `chaosfm train`; each adds its forecaster"
    )
    reference: str | None = Field(
        None, description="model every other is compared with, window for window, with a bootstrap interval "
        "(default: garch on market data when it is scored, context_parroting on trajectories)",
    )
    calibrate: list[Literal["split", "aci", "agaci"]] = Field(
        default_factory=list,
        description="add a conformally calibrated copy of every model and run, named MODEL+METHOD: split "
        "conformal, adaptive conformal inference (aci) or its aggregation over step sizes (agaci)",
    )
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="options of the calibrated copies (chaosfm.forecasters.ConformalForecaster)"
    )
    out: Path = out_field("evaluate")
    title: str = "chaosfm evaluation"
    x64: bool = Field(
        False, description="compute in float64 (default float32; also CHAOSFM_X64=1): every model, the"
        " online predictor included, then fits and forecasts in float64"
    )


DEFAULT_MODELS = {
    "market": ["random_walk", "garch", "har_rv", "ar", "seasonal_naive", "context_parroting", "last_value"],
    # A seasonal lag means nothing for a chaotic flow; GARCH needs prices.
    "trajectory": ["context_parroting", "ar", "random_walk", "last_value"],
}


def _default_models(kind: str) -> list[str]:
    return list(DEFAULT_MODELS[kind])


def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> EvaluateConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top."""
    config = read_config(EvaluateConfig, path, overrides)
    if not config.datasets:
        raise ConfigError("datasets: name at least one dataset (--data, or a datasets key in --config)")
    return config


def _fence(frame: pd.DataFrame, spec: DatasetSpec, config: EvaluateConfig, embargo: int) -> Any:
    chosen = spec.cutoff if spec.cutoff is not None else config.cutoff
    try:
        return resolve_fence(frame, chosen, config.cutoff_fraction, embargo, key=f"dataset {spec.name}: cutoff")
    except ConfigError as error:
        first = frame["timestamp"].iloc[0]
        what = "dates" if isinstance(first, pd.Timestamp) else "numbers"
        raise ConfigError(
            f"{error}; its timestamps are {what} (e.g. {first!s}): give each dataset its own cutoff in a config"
        ) from None


def _clock(frame: pd.DataFrame, spec: DatasetSpec, protocol: Protocol) -> dict[str, Any]:
    """What VPT will use on ``frame``: ``{"lyapunov_exponent", "dt", "warnings"}`` (all None or
    empty when no VPT is scored).

    Raises:
        ConfigError: a score is unknown; or the exponent is known and ``dt`` is not, and the
            timestamps do not give it.
    """
    try:
        scores = resolve_scores(protocol.metrics, frame_kind(frame), target_columns(frame))
    except ValueError as error:
        raise ConfigError(f"protocol.metrics: {error}") from None
    clock: dict[str, Any] = {"lyapunov_exponent": None, "dt": None, "warnings": []}
    if not any(map(is_vpt, scores)):
        return clock
    sidecar = f"{frame.attrs.get('name', 'NAME')}.json"
    try:
        lyapunov, dt = vpt_clock(frame, protocol)
    except DataError as error:
        raise ConfigError(
            f"dataset {spec.name}: give --dt (config key protocol.dt) or \"dt\" in {sidecar} beside the file: "
            f"valid_prediction_time needs the time per row, and the timestamps do not give it: {error}"
        ) from None
    if lyapunov is None:
        clock["warnings"].append(
            f"{spec.name}: valid_prediction_time is NaN: no largest Lyapunov exponent is known for this "
            f"trajectory. Give --lyapunov (config key protocol.lyapunov_exponent) and --dt (protocol.dt; "
            f"optional when the timestamps are evenly spaced numbers), or write {sidecar} beside the file: "
            f'{{"lyapunov_exponent": ..., "dt": ...}}'
        )
        return clock
    clock.update(lyapunov_exponent=lyapunov, dt=dt)
    return clock


def prepare_dataset(
    spec: DatasetSpec, config: EvaluateConfig
) -> tuple[pd.DataFrame, Any, list[str], dict[str, Any]]:
    """Load a dataset and resolve its cutoff, models and VPT clock, before any slow work starts."""
    frame = load_data(spec.name, spec.options, config)
    kind = frame_kind(frame)
    names = spec.models or config.models or _default_models(kind)
    unknown = [n for n in names if n not in FORECASTERS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}{did_you_mean(unknown[0], FORECASTERS)}; known: "
                          f"{', '.join(FORECASTERS)}")
    unsupported = [n for n in names if kind not in FORECASTERS[n].kinds]
    if unsupported:
        raise ConfigError(f"model(s) {unsupported} do not support {kind} data ({spec.name})")
    for name in names:
        _make(name, config)  # a bad option fails here, before any slow work
    protocol = spec.protocol or config.protocol
    _calibrated([make_forecaster("last_value")], config, protocol)  # a bad calibration option fails here
    runs = _runs(config, spec)
    scored = [*names, *(f.name for f in runs)]
    _reference(config, kind, [*scored, *(f"{n}+{m}" for n in scored for m in config.calibrate)])
    for forecaster in runs:
        columns = target_columns(frame)
        if forecaster.columns != columns:
            raise ConfigError(
                f"runs: {forecaster.run_dir} forecasts {forecaster.columns}, but {spec.name} is scored "
                f"on {columns}; evaluate it on data of the kind it was trained on"
            )
    clock = _clock(frame, spec, protocol)
    for warning in clock["warnings"]:
        say(f"warning: {warning}")
    fence = _fence(frame, spec, config, protocol.embargo)
    _check_windows(frame, spec, protocol, fence)
    _check_memory(frame, spec, protocol)
    return frame, fence.cutoff, names, clock


def _check_windows(frame: pd.DataFrame, spec: DatasetSpec, protocol: Protocol, fence: Any) -> None:
    """Refuse an evaluation that could score no fresh window, saying why, before anything is fitted.

    A window is fresh for a model fitted through the fence (``classify_window`` with nothing
    upstream); a run folder's upstream artifacts may still make some within-pretrain, which is
    a result, not an error.

    Raises:
        ConfigError: no window fits in the data, or none starts after the cutoff and the embargo.
    """
    origins = protocol.window_origins(frame)
    rows = frame.groupby("asset", sort=False).size()
    if origins.empty:
        raise ConfigError(
            f"dataset {spec.name}: no window to score: a window needs protocol.min_context={protocol.min_context} "
            f"rows of history and --horizon {protocol.horizon:,} rows to score ({protocol.min_context + protocol.horizon:,} "
            f"rows), and the longest asset has {rows.max():,} rows; lower --horizon (config key protocol.horizon)"
        )
    seen = trained_through(fence.train(frame))
    if _any_fresh(frame, origins, seen, protocol.embargo):
        return
    if protocol.max_windows is not None:
        every = protocol.model_copy(update={"max_windows": None}).window_origins(frame)
        if _any_fresh(frame, every, seen, protocol.embargo):
            raise ConfigError(
                f"dataset {spec.name}: no fresh window to score: --max-windows {protocol.max_windows} keeps that many "
                f"evenly spaced windows of each asset, and none of them comes after the cutoff "
                f"{_cutoff_text(fence.cutoff)} and the embargo; raise --max-windows (config key protocol.max_windows)"
            )
    cutoffs = fence.per_asset(frame)
    after = max(int((part["timestamp"] > cutoffs[str(a)]).sum()) for a, part in frame.groupby("asset", sort=False))
    raise ConfigError(
        f"dataset {spec.name}: no fresh window to score: at most {after:,} rows of an asset come after the cutoff "
        f"{_cutoff_text(fence.cutoff)}, and a fresh window starts --embargo {protocol.embargo} rows after it and "
        f"needs --horizon {protocol.horizon:,} rows; give an earlier --cutoff, or a shorter --horizon or --embargo"
    )


def _any_fresh(frame: pd.DataFrame, origins: pd.DataFrame, seen: dict[str, Any], embargo: int) -> bool:
    """Whether a window of ``origins`` is fresh for a model that saw ``seen`` and nothing upstream."""
    for asset, part in frame.groupby("asset", sort=False):
        stamps = part["timestamp"].to_numpy()
        for first_target in origins.loc[origins["asset"] == asset, "origin"]:
            if window_class_at(stamps, first_target, str(asset), seen, [], embargo) == "fresh":
                return True
    return False


def _cutoff_text(cutoff: Any) -> str:
    """A cutoff for a message: one date, or ``asset date`` pairs when the assets' cutoffs differ."""
    cutoff = cutoff_to_json(cutoff)
    if isinstance(cutoff, dict):
        values = set(cutoff.values())
        return str(next(iter(values))) if len(values) == 1 else ", ".join(f"{a} {c}" for a, c in cutoff.items())
    return str(cutoff)


def _check_memory(frame: pd.DataFrame, spec: DatasetSpec, protocol: Protocol) -> None:
    """Refuse a forecast size the machine cannot hold, saying what fits, before anything is allocated.

    Raises:
        ConfigError: one window's forecast would need more memory than is available.
    """
    available = available_memory()
    channels = len(target_columns(frame))
    need = protocol.forecast_bytes(channels)
    if available is None or need <= available:
        return
    per_sample = protocol.model_copy(update={"num_samples": 1}).forecast_bytes(channels)
    fits = available // per_sample
    raise ConfigError(
        f"dataset {spec.name}: --num-samples {protocol.num_samples:,} with --horizon {protocol.horizon:,} and "
        f"{channels} channel(s) needs about {need / 2**30:,.1f} GiB per forecast, and {available / 2**30:,.1f} GiB "
        f"of memory is available: at most {fits:,} samples fit at this horizon"
        + ("" if fits else "; lower --horizon")
    )


def _runs(config: EvaluateConfig, spec: DatasetSpec) -> list[Any]:
    """One forecaster per run folder of the evaluation and of ``spec`` (with its ``model_options``).

    Raises:
        ConfigError: a folder is not a run, or a run that does not forecast.
    """
    return [
        load_forecaster(run, **config.model_options.get(Path(run).name, {})) for run in [*config.runs, *spec.runs]
    ]


DEFAULT_REFERENCE = {"market": "garch", "trajectory": "context_parroting"}
"""The model others are compared with when ``reference`` is not given and it is scored: the
baseline of the field (GARCH for markets; context parroting, the cheapest strong baseline of
chaotic systems)."""


def _reference(config: EvaluateConfig, kind: str, names: list[str]) -> str | None:
    if config.reference is not None:
        if config.reference not in names:
            raise ConfigError(f"reference: {config.reference!r} is not scored; scored models: {', '.join(names)}")
        return config.reference
    chosen = DEFAULT_REFERENCE[kind]
    return chosen if chosen in names else None


def _calibrated(bases: list[Any], config: EvaluateConfig, protocol: Protocol) -> dict[str, Any]:
    """``MODEL+METHOD`` -> a calibrated copy of each of ``bases``, for every method of
    ``calibrate``; the calibration windows are cut as the protocol cuts windows.

    Raises:
        ConfigError: an option ``calibration`` does not take, or a bad value.
    """
    options = {"seed": protocol.seed, "min_context": protocol.min_context, **config.calibration}
    if protocol.context_length is not None:
        options.setdefault("context_length", protocol.context_length)
    out = {}
    for method in config.calibrate:
        for base in bases:
            try:
                wrapped = ConformalForecaster(base, method=method, **options)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"calibration: {error}") from None
            out[wrapped.name] = wrapped
    return out


def _make(name: str, config: EvaluateConfig) -> Any:
    try:
        return make_forecaster(name, **config.model_options.get(name, {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model_options.{name}: {error}") from None


def evaluate_dataset(
    spec: DatasetSpec, config: EvaluateConfig,
    prepared: tuple[pd.DataFrame, Any, list[str], dict[str, Any]] | None = None,
) -> tuple[pd.DataFrame, Results, dict]:
    """Fit through the cutoff and score one dataset."""
    frame, cutoff, names, clock = prepared or prepare_dataset(spec, config)
    protocol = spec.protocol or config.protocol
    started = time.perf_counter()
    forecasters, skipped = _fit_models(names, spec, config, frame, cutoff, protocol.embargo)
    runs = {f.name: f for f in _runs(config, spec)}
    fit_through(runs, frame, cutoff, protocol.embargo)
    forecasters.update(runs)
    # The calibrated copies wrap the raw models themselves, already fitted: each copy fits only
    # its calibration model.
    calibrated = _calibrated(list(forecasters.values()), config, protocol)
    fit_through(calibrated, frame, cutoff, protocol.embargo)
    forecasters.update(calibrated)
    results = evaluate(forecasters, frame, protocol, cutoff=cutoff, keep_forecasts=True)
    if results.scores.empty:
        raise ConfigError(
            f"dataset {spec.name}: no window was scored: every window is in the embargo of a model or was trained "
            f"on (skipped by protocol.score_in_sample: false); give an earlier --cutoff or a shorter --embargo"
        )
    results.reference = _reference(config, frame_kind(frame), list(forecasters))
    seen = merge_trained_through(*(f.trained_through for f in forecasters.values()))
    info = {"seconds": time.perf_counter() - started, "trained_through": trained_through_to_json(seen), **clock,
            "fitted": {name: summary for name, f in forecasters.items() if (summary := f.fitted_summary())},
            "skipped": skipped}
    return frame, results, info


def _fit_models(
    names: list[str], spec: DatasetSpec, config: EvaluateConfig, frame: pd.DataFrame, cutoff: Any, embargo: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The named models, each fitted through the cutoff, and ``{model: why}`` for the models left out.

    With no model named (the default, every baseline that applies) a model that cannot fit these
    rows (GARCH needs 250 returns) is left out, saying why; a model the user named must fit.

    Raises:
        ConfigError: a named model cannot fit the rows through the cutoff, or no default one can.
    """
    chosen = spec.models or config.models
    fitted: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        forecaster = _make(name, config)
        try:
            fit_through({name: forecaster}, frame, cutoff, embargo)
        except ValueError as error:
            if chosen:
                raise ConfigError(
                    f"dataset {spec.name}: model {name} cannot fit the rows through the cutoff "
                    f"{_cutoff_text(cutoff)}: {error}; give a later --cutoff or leave {name} out of --models"
                ) from None
            skipped[name] = str(error)
            say(f"{spec.name}: skipping {name}, which cannot fit the rows through the cutoff: {error}")
            continue
        fitted[name] = forecaster
    if not fitted:
        raise ConfigError(f"dataset {spec.name}: no model can fit the rows through the cutoff: " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()))
    return fitted, skipped


def run(config: EvaluateConfig) -> dict[str, Any]:
    """Run an evaluation and write its run folder; return the ``metrics.json`` content."""
    x64 = enable_x64(config.x64)  # before any array is made
    metrics: dict[str, Any] = {"datasets": {}, "x64": x64}
    sections: list[str] = []
    tables: list[pd.DataFrame] = []
    forecasts: dict[str, pd.DataFrame] = {}
    trained: dict[str, Any] = {}
    prepared = [prepare_dataset(spec, config) for spec in config.datasets]
    out = Path(config.out)  # created only once every dataset, cutoff and model is known good
    write_config(out, config)
    for spec, ready in zip(config.datasets, prepared):
        frame, results, info = evaluate_dataset(spec, config, ready)
        name = results.dataset
        metrics["datasets"][name] = results.to_dict()
        metrics["datasets"][name]["seconds"] = round(info["seconds"], 2)
        if info["fitted"]:
            metrics["datasets"][name]["fitted"] = info["fitted"]
        if info["skipped"]:
            metrics["datasets"][name]["skipped"] = info["skipped"]
        if frame_kind(frame) == "trajectory":  # what VPT used, or why it is NaN
            metrics["datasets"][name].update({k: info[k] for k in ("lyapunov_exponent", "dt", "warnings")})
        trained[name] = info["trained_through"]
        sections.append(dataset_section(name, frame, results, target_columns(frame)))
        table = results.scores.copy()
        table.insert(0, "dataset", name)
        table["origin"] = table["origin"].astype(str)
        tables.append(table)
        forecasts[name] = results.forecasts
    metrics = nan_to_none(metrics)
    write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "scores.parquet", pd.concat(tables, ignore_index=True).to_parquet(index=False))
    write_forecasts(out, forecasts)
    write_report(out / "report.html", config.title, sections)
    atomic_write_bytes(out / "table.md", evaluation_markdown(metrics).encode())
    finish_run(out, seed=config.protocol.seed, trained_through=trained)
    return metrics


def write_forecasts(out: Path, forecasts: dict[str, pd.DataFrame]) -> list[Path]:
    """Write every dataset's forecasts, a ``dataset`` column first, and return the files written.

    One ``forecasts.parquet`` holds them all when their timestamps are of one type (dates, or
    numbers); a run that mixes market data and trajectories (the demo) writes one
    ``forecasts-NAME.parquet`` per dataset instead, as one column cannot hold both types.
    """
    tables = [table.assign(dataset=name)[["dataset", *table.columns]] for name, table in forecasts.items()]
    dated = {pd.api.types.is_datetime64_any_dtype(table["timestamp"]) for table in tables if len(table)}
    if len(dated) <= 1:
        named = {out / "forecasts.parquet": pd.concat([t for t in tables if len(t)] or tables, ignore_index=True)}
    else:
        named = {out / f"forecasts-{name}.parquet": table for name, table in zip(forecasts, tables)}
    for path, table in named.items():
        atomic_write_bytes(path, table.to_parquet(index=False))
    return list(named)
