"""``chaosfm tune``: walk-forward tuning of the online predictor's meta-parameters with Optuna.

A trial draws a point of the search space (by default: signature depth, Sinkhorn epsilon, JKO
tau, CUSUM h and k, the CUSUM error-variance EMA weight, the WTMM cone constant C and the Hölder
threshold), writes it into the base :class:`StreamConfig`'s predictor, and scores it by
:class:`WalkForwardValidator` on the rows at or before the tuning cutoff: a fresh predictor per
fold, fitted on the fold's last ``max_memory`` rows, forecasting the next ``horizon``. The mean
score over the folds is minimised with TPE.

Several workers share one search: every ``chaosfm tune`` pointed at the same ``storage`` (any
SQLAlchemy RDB URL; default ``sqlite:///<out>/optuna.db``) and ``study`` joins it. The trial
budget is global and exact: a trial whose number is preceded by ``trials`` live ones (complete,
running or waiting) is surplus, pruned before it runs, and stops its worker. Each trial's sampler
is TPE seeded by ``(seed, trial number)``, so two workers never replay the same random start.
A killed worker's running trial stops sending heartbeats; after two heartbeat intervals the next
worker (or the next ``chaosfm tune`` on that study: studies resume) marks it failed and queues its
parameters again (``retries`` times), so no trial is lost.

Outputs in ``out``: ``best.yaml`` (a StreamConfig ``chaosfm stream --config`` reads),
``trials.csv``, ``metrics.json``, ``config.yaml`` and ``meta.json`` (``trained_through``: the last
row tuning saw).
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chaosfm._artifacts import atomic_write_text, write_json, write_yaml
from chaosfm._config import ConfigError, enable_x64, float_dtype, parse_config, read_config
from chaosfm.data import LeakageError, trained_through, trained_through_to_json
from chaosfm.evaluate import WalkForwardValidator
from chaosfm.jobs._common import (
    DEFAULT_CUTOFF_FRACTION,
    Cutoff,
    ReadOptions,
    finish_run,
    load_data,
    out_field,
    pick_asset,
    resolve_fence,
)
from chaosfm.jobs._tune_study import live_trials, open_study, redacted, work_left
from chaosfm.predictor import OnlinePredictorForecaster, PredictorConfig, StreamConfig

__all__ = ["DEFAULT_SPACE", "FLAGS", "SearchRange", "TuneConfig", "read", "run"]

FLAGS: dict[str, str] = {"every": "step", "max_windows": "max_folds", "x64": "base.x64"}
"""CLI flag -> config key (every flag is a top-level key of the same name)."""


class TrialFailed(RuntimeError):
    """A point of the space the predictor cannot be scored at (invalid combination, NaN score).

    The trial is recorded as failed and the search goes on; any other error stops the worker.
    """


class SearchRange(BaseModel):
    """One dimension of the search: ``[low, high]``, log-uniform if ``log``, integers if ``integer``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got {self.low}")
        return self


DEFAULT_SPACE: dict[str, SearchRange] = {
    "signature.depth": SearchRange(low=2, high=4, integer=True),  # a recompile per depth: keep few
    "orchestrator.epsilon": SearchRange(low=0.02, high=1.0, log=True),  # Sinkhorn epsilon
    "orchestrator.step_size": SearchRange(low=0.05, high=5.0, log=True),  # JKO tau
    "cusum.threshold_scale": SearchRange(low=2.0, high=10.0),  # CUSUM h
    "cusum.slack": SearchRange(low=0.0, high=1.5),  # CUSUM k
    "cusum.variance_decay": SearchRange(low=0.001, high=0.1, log=True),  # error EMA alpha
    "hoelder.cone": SearchRange(low=0.5, high=4.0),  # Besov C
    "hoelder_threshold": SearchRange(low=0.0, high=0.5),  # circuit-breaker Hölder threshold
}


def _field(path: str) -> Any:
    """The pydantic field of ``PredictorConfig`` at a dotted path, or a ConfigError."""
    model: Any = PredictorConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            where = ".".join(parts[:depth]) or "predictor"
            raise ConfigError(f"space: {path!r} is not a predictor setting; {where} has: {', '.join(sorted(fields))}")
        model = fields[part].annotation
    if model not in (int, float):
        raise ConfigError(f"space: {path!r} is not a number (it is {model}); only numbers are tuned")
    return model


class TuneConfig(ReadOptions):
    """``chaosfm tune``: data, walk-forward validation, the Optuna study, the search space."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="built-in name or CSV/Parquet path")
    asset: str | None = Field(None, description="asset of a multi-asset frame (default: the first)")
    cutoff: Cutoff = Field(
        None, description="last timestamp tuning may see; default: at cutoff_fraction of the rows"
    )
    cutoff_fraction: float = Field(
        DEFAULT_CUTOFF_FRACTION, gt=0, lt=1, description="default cutoff: this fraction of each asset's rows"
    )
    length: int | None = Field(
        1500, ge=2, description="rows ending at the cutoff that are tuned on (None: all before it)"
    )
    max_memory: int = Field(250, ge=32, description="rows each fold's predictor is fitted on")
    horizon: int = Field(5, ge=1, description="steps forecast and scored after each fold's cutoff")
    step: int | None = Field(None, ge=1, description="rows between fold cutoffs (default: horizon)")
    max_folds: int | None = Field(8, ge=1, description="at most this many folds, evenly spaced")
    num_samples: int = Field(100, ge=2, description="forecast sample paths per fold")
    metric: Literal["crps", "mae", "rmse", "smape", "mase", "wql"] = Field(
        "crps", description="the score averaged over folds and minimised"
    )
    trials: int = Field(20, ge=1, description="completed trials of the study, over every worker")
    storage: str | None = Field(None, description="Optuna RDB URL; default sqlite:///<out>/optuna.db")
    study: str = Field("chaosfm-tune", min_length=1, description="study name shared by the workers")
    seed: int = Field(0, description="TPE seeds derive from it and the trial number; fold keys too")
    heartbeat_seconds: int = Field(
        30, ge=1, description="a running trial's heartbeat; one silent for 2x this is failed"
    )
    retries: int = Field(2, ge=0, description="times an interrupted trial's parameters are re-queued")
    out: Path = out_field("tune", "folder for best.yaml, trials.csv, metrics.json")
    base: StreamConfig = Field(
        default_factory=StreamConfig, description="the stream config the tuned values are written into"
    )
    space: dict[str, SearchRange] = Field(
        default_factory=lambda: dict(DEFAULT_SPACE), description="dotted predictor setting -> range"
    )

    @field_validator("space")
    @classmethod
    def _known(cls, space: dict[str, SearchRange]) -> dict[str, SearchRange]:
        if not space:
            raise ValueError("the search space is empty")
        for path, bounds in space.items():
            if _field(path) is int and not bounds.integer:
                raise ValueError(f"{path} is an integer setting: give it integer: true")
        return space

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'optuna.db').resolve()}"


def predictor_with(base: PredictorConfig, params: dict[str, Any]) -> PredictorConfig:
    """``base`` with each dotted setting in ``params`` replaced, validated as a whole."""
    data = base.model_dump()
    for path, value in params.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_config(PredictorConfig, data, "tuned parameters")


def tuning_frame(config: TuneConfig) -> pd.DataFrame:
    """The rows tuning may see: one asset, at or before the cutoff (the one cutoff rule of every
    command), the last ``length`` of them."""
    frame = load_data(config.data, read=config)
    fence = resolve_fence(frame, config.cutoff, config.cutoff_fraction)
    part = pick_asset(frame, config.asset, config.data)
    cutoff = fence.per_asset(part)[str(part["asset"].iloc[0])]
    part = part[part["timestamp"] <= cutoff]
    if config.length is not None:
        part = part.iloc[-config.length :]
    part = part.reset_index(drop=True)
    part.attrs = dict(frame.attrs)
    needed = config.max_memory + config.horizon
    if len(part) < needed:
        raise ConfigError(
            f"{config.data}: {len(part)} rows at or before the cutoff {cutoff!s}; one fold needs"
            f" max_memory + horizon = {needed}"
        )
    return part


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None, *,
         base: str | os.PathLike[str] | None = None) -> TuneConfig:
    """The config file (optional) with flag ``overrides`` on top; ``base`` names a stream config
    file whose values the tuned ones are written into."""
    values: dict[str, Any] = {}
    if base is not None:  # first, so a flag on one of its keys (base.x64) is merged over it
        values["base"] = read_config(StreamConfig, base).model_dump(mode="json")
    values.update(overrides or {})
    return read_config(TuneConfig, path, values)


def run(
    config: TuneConfig, *, score: Callable[[PredictorConfig], float] | None = None
) -> dict[str, Any]:
    """Join (or start) the study, run trials until it holds ``config.trials``, write the outputs.

    Args:
        config: data, validation, study and search space.
        score: replaces the walk-forward score of a trial's predictor config (a cheap stand-in
            to exercise the shared study, or another objective); default: the mean
            ``config.metric`` of :class:`WalkForwardValidator` on the tuning rows.

    Returns:
        The metrics written to ``metrics.json``: best value and parameters, the base config's
        value, counts of trials by state, the tuning rows and folds.
    """
    import optuna

    from chaosfm._progress import say

    enable_x64(config.base.x64)  # before any array: every trial's predictor then runs in float64
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.base.compilation_cache:
        # Trials differ in constants baked into the step, but the warm start's DGM training is
        # the same program in every trial: compile it once per machine, not once per trial.
        from chaosfm.predictor import compilation_cache_dir, enable_compilation_cache

        enable_compilation_cache(compilation_cache_dir(config.base.cache_dir))
    frame = tuning_frame(config)
    validator = WalkForwardValidator(
        config.max_memory, config.horizon, config.step, config.max_folds, config.num_samples,
        metrics=(config.metric,), seed=config.seed,
    )
    folds = validator.n_folds(frame)
    study = open_study(config)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial) -> float:
        ahead = sum(1 for t in live_trials(study) if t.number < trial.number)
        if ahead >= config.trials:  # another worker filled the budget after this one asked
            trial.set_user_attr("surplus", True)
            study.stop()
            raise optuna.TrialPruned(f"{ahead} trials precede this one; the budget is {config.trials}")
        params = {}
        for path, bounds in config.space.items():
            if bounds.integer:
                params[path] = trial.suggest_int(path, int(bounds.low), int(bounds.high), log=bounds.log)
            else:
                params[path] = trial.suggest_float(path, bounds.low, bounds.high, log=bounds.log)
        trial.set_user_attr("worker", worker)
        try:
            predictor = predictor_with(config.base.predictor, params)
        except ConfigError as error:
            trial.set_user_attr("error", str(error))
            raise TrialFailed(str(error)) from None
        started = time.perf_counter()
        try:
            if score is None:
                scores = [
                    fold.scores[config.metric]
                    for fold in validator.backtest(lambda: OnlinePredictorForecaster(predictor, seed=config.seed), frame)
                ]
            else:
                scores = [score(predictor)]
        except LeakageError:
            raise  # a broken fence is a bug, never a bad point of the space
        except ValueError as error:  # e.g. non-finite forecasts of an unstable setting
            trial.set_user_attr("error", str(error))
            raise TrialFailed(str(error)) from None
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        value = float(np.mean(scores))
        if not math.isfinite(value):
            trial.set_user_attr("error", f"non-finite mean {config.metric}")
            raise TrialFailed(f"the mean {config.metric} over {len(scores)} folds is {value}")
        say(f"trial {trial.number}: {config.metric} {value:.6g} ({worker})")
        return value

    failures = []

    def budget(study, trial) -> None:
        failures.extend([trial.number] if trial.state == optuna.trial.TrialState.FAIL else [])
        # Every slot taken, or this worker keeps failing (a space where nothing scores).
        if not work_left(study, config.trials) or len(failures) > config.trials:
            study.stop()

    while len(failures) <= config.trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # before counting: a dead worker's trial is free
        if work_left(study, config.trials):
            try:
                study.optimize(objective, callbacks=[budget], catch=(TrialFailed, ArithmeticError))
            except ValueError as error:
                # This worker was cut off for more than two heartbeats mid-trial and the others
                # failed its trial as stale (and queued its point again): Optuna refuses the late
                # result with this ValueError. The point runs again, so this worker goes on.
                if not str(error).startswith("Cannot tell a FAIL trial"):
                    raise
                say("a trial of this worker was failed as stale while it was silent; its point is queued again")
            continue
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            break
        # The last slots are held by other workers. Wait for them: if one's machine died, its
        # heartbeat stops, the check above fails the trial and this worker runs it again, so the
        # budget completes without that machine (and the outputs written below are the study's).
        say(f"waiting for {len(running)} trial(s) of other workers: {[t.number for t in running]}")
        time.sleep(config.heartbeat_seconds)
    return write_outputs(config, study, frame, folds)


def write_outputs(config: TuneConfig, study, frame: pd.DataFrame, folds: int) -> dict[str, Any]:
    """``best.yaml``, ``trials.csv``, ``metrics.json``, ``config.yaml`` and ``meta.json``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {config.study!r} has no completed trial; see trials.csv")
    best = min(complete, key=lambda t: (t.value, t.number))
    base = [t for t in complete if t.user_attrs.get("base")]
    tuned = predictor_with(config.base.predictor, best.params)
    best_config = config.base.model_copy(update={"predictor": tuned})
    config.out.mkdir(parents=True, exist_ok=True)
    write_yaml(config.out / "best.yaml", best_config.model_dump(mode="json"))
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "worker": t.user_attrs.get("worker"),
            "seconds": t.user_attrs.get("seconds"),
            "base": bool(t.user_attrs.get("base", False)),
            "surplus": bool(t.user_attrs.get("surplus", False)),
            "error": t.user_attrs.get("error"),
            **{f"params.{k}": v for k, v in t.params.items()},
        }
        for t in trials
    ]
    atomic_write_text(config.out / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    metrics = {
        "study": config.study,
        "storage": redacted(config.storage_url()),
        "metric": config.metric,
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": best.params,
        "base_value": base[0].value if base else None,
        "trials": counts,
        "workers": sorted({t.user_attrs["worker"] for t in complete if "worker" in t.user_attrs}),
        "rows": len(frame),
        "first_timestamp": frame["timestamp"].iloc[0],
        "trained_through": trained_through_to_json(trained_through(frame)),
        "folds": folds,
        "x64": bool(float_dtype() == np.float64),  # what the trials computed in (run turned it on)
    }
    write_json(config.out / "metrics.json", metrics)
    write_yaml(config.out / "config.yaml", {**config.model_dump(mode="json"), "storage": metrics["storage"]})
    finish_run(config.out, seed=config.seed, trained_through=metrics["trained_through"])
    return metrics
