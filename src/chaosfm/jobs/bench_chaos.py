"""``chaosfm bench chaos``: forecasters of chaotic systems, side by side on independent trajectories.

For each system of the registry (:data:`chaosfm.data.SYSTEMS`) the job integrates one training
trajectory (seed ``seed``) and ``test_trajectories`` independent ones (seeds ``first_test_seed ..``:
other initial conditions on the attractor, burn-in discarded; by default seeds from 1001, which no
one looked at while building the models), all of ``length`` rows. Every model is
fitted on the training trajectory's rows up to the one cutoff rule's row (each asset's row at
``cutoff_fraction``) and scored by :func:`chaosfm.evaluate.evaluate` on ``windows`` origins per test
trajectory after the cutoff and the embargo, with the same windows, contexts and keys for every
model. The test trajectories carry the system's name as their asset, so the leakage protocol
classifies their windows by the same ``trained_through`` rule as any other data (the job keeps
``fresh`` windows only and says so if any is not).

The horizon of a system is ``horizon_lyapunov`` Lyapunov times in steps, at most half the
rows after the cutoff: a window's VPT is capped at ``horizon * dt * lambda`` (``vpt_cap`` in the
table). Summaries per (system, model): mean and median VPT, sMAPE, CRPS and 80% coverage, each
with a bootstrap interval over test trajectories (windows of one trajectory are correlated; the
trajectories are independent), and the ratio of the model's mean VPT to the reference model's
(``esn`` by default) with a paired bootstrap interval (trajectories resampled jointly).

Systems are fitted and scored ``workers`` at a time, one process each (the models here are too
small to keep two cores busy; the systems are independent and every key comes from the config, so
the result is the same as one at a time). Each model's fit and forecast seconds go in the table.

Writes ``windows.csv`` (every scored window), ``summary.csv``, ``table.md`` (a systems x models
table of mean VPT, then every summary row), ``vpt.png``, ``report.html``, ``metrics.json``,
``config.yaml`` and ``meta.json``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text, nan_to_none, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm._progress import progress, say
from chaosfm.data import SYSTEMS, chaotic_system
from chaosfm.evaluate import Protocol, bootstrap_interval, evaluate
from chaosfm.forecasters import FORECASTERS, make_forecaster
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION, finish_run, out_field, resolve_fence, write_config
from chaosfm.report import chaos_bench_section, vpt_by_system, write_report

__all__ = ["BENCH_OPTIONS", "FAST", "FLAGS", "BenchChaosConfig", "read", "run", "summarise"]

METRICS = ("valid_prediction_time", "smape", "crps", "coverage_80")
ZERO_SHOT = "zero_shot"
"""The name the zero-shot model's rows carry."""

FLAGS = {name: name for name in ("systems", "models", "test_trajectories", "windows", "length", "workers", "seed", "out")}
"""CLI flag -> config key."""

FAST: dict[str, Any] = {
    "systems": ["lorenz63", "rossler", "henon"],
    "length": 4000,
    "test_trajectories": 3,
    "windows": 3,
    "context_length": 1000,
    "num_samples": 8,
    "model_options": {
        "esn": {"units": 300},
        "mlp_flow": {"steps": 1500},
        "flow_mamba": {"steps": 300, "d_model": 32, "mlp_width": 64},
    },
}
"""What ``--fast`` changes: three systems, shorter trajectories, fewer windows, smaller models."""


BENCH_OPTIONS: dict[str, dict[str, Any]] = {
    "flow_mamba": {"steps": 600, "d_model": 32, "mlp_width": 64},
    "token_mamba": {"steps": 300},
}
"""Constructor options of the bench's models when the config gives none: smaller fits than the
forecasters' defaults, so that the full run (34 systems) takes under 45 minutes on 2 cores (the
token models, about a minute of training each per system at their defaults, are not in the
default ``models``: name them to add them).
Chosen on training rows only (seed 0, the first 8,000 rows, scored on their held-out last 20%:
mean valid time in Lyapunov times; 2-core AMD EPYC VM, 2026-12-02):

- ``flow_mamba`` at width 32/64 and 600 steps, an eighth of its default fit: lorenz63 6.74
  against 7.03 at the default size, rossler 5.39 against 5.51, sprott_c 6.76 against 6.57.
- ``token_mamba`` at 300 steps, half its default fit: lorenz63 0.91 against 1.68 (greedy).
"""


class ZeroShotSection(BaseModel):
    """One model pretrained on a set of systems and scored on the others from their context alone."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("flow_mamba", description="forecaster name")
    options: dict[str, Any] = Field(
        default_factory=lambda: {"normalisation": "context", "readout": "context"},
        description="its constructor options",
    )
    systems: list[str] = Field(min_length=1, description="the systems it is pretrained on (every row of each)")


class BenchChaosConfig(BaseModel):
    """``chaosfm bench chaos``: which systems and models, how many trajectories and windows."""

    model_config = ConfigDict(extra="forbid")

    systems: list[str] | None = Field(
        None, description="registry systems; default: every one with a published Lyapunov exponent"
    )
    models: list[str] = Field(
        default_factory=lambda: ["last_value", "ar", "context_parroting", "esn", "ngrc", "mlp_flow", "flow_mamba"],
        description="forecaster names (chaosfm.forecasters.FORECASTERS)",
    )
    model_options: dict[str, dict[str, Any]] | None = Field(
        None, description="name -> constructor options; default: BENCH_OPTIONS for the models listed"
    )
    reference: str = Field("esn", description="the model every VPT ratio is taken against")
    length: int = Field(10_000, ge=100, description="rows of every trajectory")
    cutoff_fraction: float = Field(DEFAULT_CUTOFF_FRACTION, gt=0, lt=1)
    embargo: int = Field(5, ge=0)
    test_trajectories: int = Field(10, ge=1, description="independent trajectories scored per system")
    windows: int = Field(3, ge=1, description="forecast origins per test trajectory, after the cutoff")
    context_length: int = Field(3000, ge=16, description="rows each forecast reads")
    horizon_lyapunov: float = Field(15.0, gt=0, description="horizon in Lyapunov times (caps VPT)")
    num_samples: int = Field(16, ge=1)
    n_bootstrap: int = Field(1000, ge=100)
    zero_shot: ZeroShotSection | None = Field(
        None, description="a model pretrained on other systems, scored as 'zero_shot' on the systems it never saw"
    )
    workers: int | None = Field(
        None, ge=1, description="systems fitted and scored at once, one process each; default: the CPU count"
    )
    seed: int = Field(0, description="the training trajectory's seed (and the bootstrap's)")
    first_test_seed: int = Field(
        1001, description="test trajectories use seeds first_test_seed, +1, ..: never looked at while the models were built"
    )
    out: Path = out_field("bench-chaos")

    @model_validator(mode="after")
    def _default_options(self) -> "BenchChaosConfig":
        if self.model_options is None:
            self.model_options = {n: dict(o) for n, o in BENCH_OPTIONS.items() if n in self.models}
        return self


def read(path: str | Path | None = None, overrides: dict[str, Any] | None = None, *, fast: bool = False
         ) -> BenchChaosConfig:
    """The config from ``path`` (optional) with dotted ``overrides``; ``fast`` starts from :data:`FAST`."""
    merged = {**(FAST if fast else {}), **(overrides or {})}
    config = read_config(BenchChaosConfig, path, merged)
    if fast and "model_options" not in (overrides or {}):  # the preset's options of models not run
        config.model_options = {n: o for n, o in config.model_options.items() if n in config.models}
    return config


def _check(config: BenchChaosConfig) -> list[str]:
    systems = config.systems or [n for n, s in SYSTEMS.items() if s.lyapunov_reference is not None]
    unknown = [n for n in systems if n not in SYSTEMS]
    if unknown:
        raise ConfigError(f"systems: unknown {unknown}; known: {', '.join(SYSTEMS)}")
    unknown = [n for n in config.models if n not in FORECASTERS]
    if unknown:
        raise ConfigError(f"models: unknown {unknown}; known: {', '.join(FORECASTERS)}")
    for name in config.model_options:
        if name not in config.models:
            raise ConfigError(f"model_options.{name}: {name!r} is not among models {config.models}")
    tests = range(config.first_test_seed, config.first_test_seed + config.test_trajectories)
    if config.seed in tests:
        raise ConfigError(f"first_test_seed: test seeds {tests.start}..{tests.stop - 1} include the training seed {config.seed}")
    if config.reference not in config.models:
        raise ConfigError(f"reference: {config.reference!r} is not among models {config.models}")
    if config.zero_shot is not None:
        unknown = [n for n in config.zero_shot.systems if n not in SYSTEMS]
        if unknown:
            raise ConfigError(f"zero_shot.systems: unknown {unknown}; known: {', '.join(SYSTEMS)}")
        dimensions = {SYSTEMS[n].dimension for n in config.zero_shot.systems}
        if len(dimensions) > 1:
            raise ConfigError(f"zero_shot.systems: every system must have one dimension; got {sorted(dimensions)}")
        if config.zero_shot.model not in FORECASTERS:
            raise ConfigError(f"zero_shot.model: unknown {config.zero_shot.model!r}; known: {', '.join(FORECASTERS)}")
    return systems


def _pretrain_zero_shot(config: BenchChaosConfig) -> tuple[Any, int, float]:
    """The zero-shot model fitted on every row of its systems' training trajectories: a window of
    one of them would be in_sample even on a new initial condition, so those are not scored."""
    section = config.zero_shot
    frames = [chaotic_system(name, length=config.length, seed=config.seed) for name in section.systems]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs = {}  # several systems: no one exponent or dt
    try:
        model = make_forecaster(section.model, **section.options)
    except ValueError as error:
        raise ConfigError(f"zero_shot.options: {error}") from None
    started = time.perf_counter()
    model.fit(frame)
    return model, SYSTEMS[section.systems[0]].dimension, time.perf_counter() - started


def _build(config: BenchChaosConfig, name: str) -> Any:
    try:
        return make_forecaster(name, **config.model_options.get(name, {}))
    except ValueError as error:
        raise ConfigError(f"model_options.{name}: {error}") from None


def _plan(config: BenchChaosConfig, system: str) -> tuple[pd.DataFrame, Any, Protocol, dict[str, Any]]:
    """The training rows of ``system``, its fence, the protocol its windows are scored by, and
    what they use (exponent, dt, horizon and the VPT cap it sets, training rows)."""
    train_full = chaotic_system(system, length=config.length, seed=config.seed)
    fence = resolve_fence(train_full, None, config.cutoff_fraction, config.embargo)
    train = fence.train(train_full)
    lyapunov, dt = float(train_full.attrs["lyapunov_exponent"]), float(train_full.attrs["dt"])
    after = config.length - len(train) - config.embargo
    horizon = max(1, min(math.ceil(config.horizon_lyapunov / (dt * lyapunov)), after // 2))
    context = min(config.context_length, len(train))
    protocol = Protocol(
        horizon=horizon, num_samples=config.num_samples, context_length=context,
        min_context=len(train) + config.embargo, embargo=config.embargo, metrics=METRICS,
        max_windows=config.windows, step=1, lyapunov_exponent=lyapunov, dt=dt, seed=config.seed,
    )
    info = {"lyapunov_exponent": lyapunov, "dt": dt, "horizon": horizon, "vpt_cap": horizon * dt * lyapunov,
            "training_rows": len(train)}
    return train, fence, protocol, info


def _score(config: BenchChaosConfig, system: str, fitted: dict[str, Any], fence: Any, protocol: Protocol
           ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every window of every fitted model on the test trajectories of ``system``, and the seconds
    each model spent forecasting them."""
    parts, seconds = [], dict.fromkeys(fitted, 0.0)
    for index in range(config.test_trajectories):
        seed = config.first_test_seed + index
        test = chaotic_system(system, length=config.length, seed=seed)
        for name, model in fitted.items():  # one model at a time, to time each; the windows and keys are the same
            started = time.perf_counter()
            results = evaluate({name: model}, test, protocol, cutoff=fence.cutoff)
            seconds[name] += time.perf_counter() - started
            parts.append(results.scores.assign(system=system, trajectory=seed))
    return pd.concat(parts, ignore_index=True), seconds


def _score_system(config: BenchChaosConfig, system: str, zero_shot: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit every model on the training rows of ``system`` and score it (with ``zero_shot``, a model
    fitted on other systems, when given, on the same test trajectories): every scored window, and
    what the system's run used and how long each model took."""
    train, fence, protocol, info = _plan(config, system)
    fitted, fit_seconds = {}, {}
    for name in config.models:
        started = time.perf_counter()
        fitted[name] = _build(config, name).fit(train)
        fit_seconds[name] = time.perf_counter() - started
    if zero_shot is not None:
        fitted[ZERO_SHOT] = zero_shot
    scores, forecast_seconds = _score(config, system, fitted, fence, protocol)
    return scores, {**info, "fit_seconds": fit_seconds, "forecast_seconds": forecast_seconds}


def _quiet_worker() -> None:
    """A worker process shows no progress bars of its own: the parent shows one over systems."""
    os.environ["CHAOSFM_PROGRESS"] = "0"


def _score_systems(config: BenchChaosConfig, systems: list[str], zero_shot: dict[str, Any]
                   ) -> Iterator[tuple[str, pd.DataFrame, dict[str, Any]]]:
    """``(system, scores, info)`` of every system as each finishes: in ``workers`` processes at
    once, each fitting and scoring whole systems (a system's models fit one after another on one
    core: the small models here do not keep two cores busy, the systems do). ``zero_shot`` maps
    a system to the pretrained model scored beside the others on it (sent to its process)."""
    workers = min(config.workers or os.cpu_count() or 1, len(systems))
    if workers <= 1:
        for system in systems:
            yield (system, *_score_system(config, system, zero_shot.get(system)))
        return
    # spawn, not fork: a forked child of a process that has started JAX's threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_worker) as pool:
        pending = {pool.submit(_score_system, config, system, zero_shot.get(system)): system for system in systems}
        for future in as_completed(pending):
            yield (pending[future], *future.result())


def summarise(windows: pd.DataFrame, config: BenchChaosConfig) -> pd.DataFrame:
    """One row per (system, model): means over windows with bootstrap intervals over trajectories,
    and the paired ratio of mean VPT to the reference model's."""
    rows = []
    per_trajectory = windows.groupby(["system", "model", "trajectory"])[list(METRICS)].mean()
    for (system, model), part in windows.groupby(["system", "model"], sort=False):
        trajectories = per_trajectory.loc[(system, model)]
        row: dict[str, Any] = {"system": system, "model": model, "windows": len(part),
                               "trajectories": len(trajectories)}
        vpt = part["valid_prediction_time"].to_numpy()
        row["vpt_mean"], row["vpt_median"] = float(np.mean(vpt)), float(np.median(vpt))
        seed = [config.seed, len(rows)]
        interval = bootstrap_interval([trajectories["valid_prediction_time"].to_numpy()],
                                      n_resamples=config.n_bootstrap, seed=seed)
        row["vpt_mean_low"], row["vpt_mean_high"] = interval["ci_low"], interval["ci_high"]
        for metric in METRICS[1:]:
            row[metric] = float(part[metric].mean())
        reference = per_trajectory.loc[(system, config.reference)]["valid_prediction_time"]
        ours = trajectories["valid_prediction_time"].reindex(reference.index).to_numpy()
        theirs = reference.to_numpy()
        row["vpt_ratio"] = float(ours.mean() / theirs.mean()) if theirs.mean() > 0 else float("nan")
        ratio = {"ci_low": None, "ci_high": None}
        if np.all(theirs > 0):  # a ratio to a reference that held no step is undefined
            # Paired: one resample of trajectory indices serves both models.
            ratio = bootstrap_interval(
                [np.arange(len(ours))],
                lambda index, axis=-1: np.mean(ours[index], axis=axis) / np.mean(theirs[index], axis=axis),
                n_resamples=config.n_bootstrap, seed=seed,
            )
        row["vpt_ratio_low"], row["vpt_ratio_high"] = ratio["ci_low"], ratio["ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame, info: dict[str, dict[str, Any]], reference: str) -> str:
    """The summary as a markdown table (VPT in Lyapunov times, ratios against ``reference``)."""
    lines = [
        f"| system | model | mean VPT [95% CI] | median VPT | VPT / {reference} [95% CI] | sMAPE | CRPS | cov. 80% "
        "| fit s | forecast s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        system = info[row.system]
        fit = system["fit_seconds"].get(row.model)  # None: fitted elsewhere (the zero-shot model)
        lines.append(
            f"| {row.system} (cap {system['vpt_cap']:.1f}) | {row.model} | {row.vpt_mean:.2f} [{_f(row.vpt_mean_low)}, "
            f"{_f(row.vpt_mean_high)}] | {row.vpt_median:.2f} | {_f(row.vpt_ratio)} [{_f(row.vpt_ratio_low)}, "
            f"{_f(row.vpt_ratio_high)}] | {row.smape:.1f} | {row.crps:.3g} | {row.coverage_80:.2f} "
            f"| {'–' if fit is None else f'{fit:.1f}'} | {system['forecast_seconds'][row.model]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def wide_markdown(summary: pd.DataFrame, info: dict[str, dict[str, Any]], models: list[str]) -> str:
    """Mean VPT as a systems x models table, with the median over systems as its last row."""
    table = summary.pivot(index="system", columns="model", values="vpt_mean")
    columns = [m for m in models if m in table] + [m for m in table if m not in models]
    table = table.loc[list(dict.fromkeys(summary["system"])), columns]
    lines = ["| system (VPT cap) | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for system, row in table.iterrows():
        lines.append(f"| {system} ({info[system]['vpt_cap']:.1f}) | " + " | ".join(_f(v) for v in row) + " |")
    lines.append("| **median over systems** | " + " | ".join(_f(v) for v in table.median()) + " |")
    return "\n".join(lines) + "\n"


def zero_shot_markdown(table: pd.DataFrame, info: dict[str, Any]) -> str:
    """The zero-shot comparison as markdown: medians over the systems it never saw."""
    lines = [
        f"Zero-shot: pretrained on {', '.join(info['pretrained_on'])}; scored on {len(info['scored_on'])} systems "
        "it never saw (fresh windows). Median over those systems of each model's mean VPT, and the median "
        "per-system difference (zero_shot minus the model) with a bootstrap interval over systems.",
        "",
        "| against | systems | zero_shot median VPT | their median VPT | median difference [95% CI] | zero_shot better on |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(f"| {row.against} | {row.systems} | {_f(row.zero_shot_median_vpt)} | {_f(row.their_median_vpt)} | "
                     f"{_f(row.median_difference)} [{_f(row.difference_low)}, {_f(row.difference_high)}] | "
                     f"{row.zero_shot_better_on} of {row.systems} |")
    return "\n".join(lines) + "\n"


def _f(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.2f}"


def across_systems(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: the median over systems of its mean VPT, and of its VPT ratio."""
    grouped = summary.groupby("model", sort=False)
    return pd.DataFrame({
        "median_system_vpt": grouped["vpt_mean"].median(),
        "median_system_ratio": grouped["vpt_ratio"].median(),
        "systems": grouped["system"].nunique(),
    }).reset_index()


def zero_shot_summary(summary: pd.DataFrame, config: BenchChaosConfig) -> pd.DataFrame:
    """Over the systems the zero-shot model never saw: its median (over systems) mean VPT beside
    each other model's on the same systems, and the median of the per-system differences with a
    bootstrap interval over systems."""
    table = summary.pivot(index="system", columns="model", values="vpt_mean")
    unseen = table[ZERO_SHOT].dropna().index
    rows = []
    for index, model in enumerate(m for m in config.models if m in table):
        theirs = table.loc[unseen, model].to_numpy()
        difference = table.loc[unseen, ZERO_SHOT].to_numpy() - theirs
        interval = bootstrap_interval([difference], np.median, n_resamples=config.n_bootstrap,
                                      seed=[config.seed, 10_000 + index])
        rows.append({"against": model, "systems": len(unseen), "zero_shot_median_vpt": float(np.median(table.loc[unseen, ZERO_SHOT])),
                     "their_median_vpt": float(np.median(theirs)), "median_difference": float(np.median(difference)),
                     "difference_low": interval["ci_low"], "difference_high": interval["ci_high"],
                     "zero_shot_better_on": int(np.sum(difference > 0))})
    return pd.DataFrame(rows)


def run(config: BenchChaosConfig) -> dict[str, Any]:
    """Fit, forecast and score every model on every system; write the run folder (see the module)."""
    systems = _check(config)
    for name in config.models:  # every option error before anything slow
        _build(config, name)
    out = Path(config.out)
    write_config(out, config)
    started = time.perf_counter()
    zero, zero_info = None, None
    if config.zero_shot is not None:
        zero, dimension, seconds = _pretrain_zero_shot(config)
        unseen = [n for n in systems if n not in config.zero_shot.systems and SYSTEMS[n].dimension == dimension]
        zero_info = {"pretrained_on": config.zero_shot.systems, "scored_on": unseen, "fit_seconds": seconds,
                     "options": config.zero_shot.options}
        say(f"zero_shot: pretrained on {len(config.zero_shot.systems)} systems in {seconds:.0f} s; scored on the "
            f"{len(unseen)} unseen {dimension}-dimensional ones")
    parts, info = {}, {}
    unseen = dict.fromkeys(zero_info["scored_on"], zero) if zero_info else {}
    for system, scores, info[system] in progress(_score_systems(config, systems, unseen), "bench chaos: systems",
                                                 total=len(systems)):
        parts[system] = scores
        say(f"{system}: " + ", ".join(
            f"{m} {scores.loc[scores.model == m, 'valid_prediction_time'].mean():.2f}" for m in scores.model.unique()
        ) + " Lyapunov times (mean VPT)")
    info = {system: info[system] for system in systems}
    parts = [parts[system] for system in systems]
    windows = pd.concat(parts, ignore_index=True)
    not_fresh = windows[windows["window_class"] != "fresh"]
    if len(not_fresh):
        say(f"note: {len(not_fresh)} windows were not fresh ({sorted(set(not_fresh.window_class))}) and are left out")
    windows = windows[windows["window_class"] == "fresh"]
    summary = summarise(windows, config)
    overall = across_systems(summary)
    zero_table = zero_shot_summary(summary, config) if zero_info else None
    elapsed = time.perf_counter() - started
    atomic_write_text(out / "windows.csv", windows.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    table = (f"Mean VPT in Lyapunov times on fresh windows ({len(systems)} systems):\n\n"
             + wide_markdown(summary, info, config.models) + "\n" + markdown_table(summary, info, config.reference))
    if zero_table is not None:
        table += "\n" + zero_shot_markdown(zero_table, zero_info)
    atomic_write_text(out / "table.md", table)
    png = vpt_by_system(summary)
    atomic_write_bytes(out / "vpt.png", png)
    write_report(out / "report.html", "chaosfm bench chaos",
                 [chaos_bench_section(summary, overall, info, config.reference, png, zero_table, zero_info)])
    metrics = {
        "systems": info, "summary": summary.to_dict(orient="records"), "across_systems": overall.to_dict(orient="records"),
        "reference": config.reference, "windows": len(windows), "not_fresh": len(not_fresh), "seconds": elapsed,
        "zero_shot": None if zero_info is None else {**zero_info, "against": zero_table.to_dict(orient="records")},
    }
    write_json(out / "metrics.json", nan_to_none(metrics))
    finish_run(out, seed=config.seed)
    return metrics
