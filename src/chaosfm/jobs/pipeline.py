"""``chaosfm pipeline --config configs/four-stage.yaml``: pretrain -> midtrain -> SFT -> RL, then one table.

The four stages run through the ``chaosfm stage`` job into ``OUT/stages/<stage>`` (a stage
folder that already verifies is reused, so a second run only evaluates). Then every stage is
scored on the *same* fresh windows of one dataset:

- the windows are cut by :func:`chaosfm.evaluate.evaluate` (walk-forward origins of the
  protocol) and classified from each run's ``trained_through`` (the union over its ancestors), so
  only windows that no stage, no ancestor and no tokenizer saw, past the embargo, are kept; the
  table uses the origins that are fresh for every stage at once;
- CRPS and directional accuracy of the decoded forecasts (``num_samples`` sampled code paths per
  window, decoded to prices by :class:`~chaosfm.forecasters.TokenForecaster`);
- next-code accuracy, top-5 accuracy and perplexity of the codes whose last candle falls in each
  window's horizon, teacher forced after the codes before the origin (what SFT optimises).

A random-walk baseline is scored on the same windows for scale (CRPS and direction only). Each
model's paired difference to pretrain over those windows gets a bootstrap interval. Writes
``metrics.json``, ``comparison.csv``, ``comparison.md``, ``config.yaml`` and ``meta.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_text, nan_to_none, verify_run, write_json
from chaosfm._config import ConfigError, parse_config, read_config
from chaosfm.evaluate import Protocol, bootstrap_interval, evaluate, fit_through
from chaosfm.forecasters import TokenForecaster, make_forecaster
from chaosfm.jobs import stage as stage_job
from chaosfm.jobs._common import finish_run, load_data, out_field, write_config
from chaosfm.train import STAGES, exo_series, next_token_metrics

__all__ = ["FLAGS", "PipelineConfig", "PipelineEvaluation", "paired_table", "read", "run"]

_METRICS = ("accuracy", "top5_accuracy", "perplexity", "crps", "directional_accuracy")
FLAGS = {"seed": "seed"}
"""CLI flag -> config key."""


class PipelineEvaluation(BaseModel):
    """``evaluate:``: the dataset every stage is compared on, and how windows are cut."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="built-in name or path; usually the midtrain asset")
    options: dict[str, Any] = Field(default_factory=dict, description="options for chaosfm.data.load")
    protocol: Protocol = Field(default_factory=Protocol)
    baselines: list[str] = Field(default_factory=lambda: ["random_walk"], description="scored beside the stages")


class PipelineConfig(BaseModel):
    """The whole pipeline file: shared ``data`` keys, one section per stage, ``evaluate``."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict, description="data keys shared by every stage")
    pretrain: dict[str, Any] = Field(default_factory=dict)
    midtrain: dict[str, Any] = Field(default_factory=dict)
    sft: dict[str, Any] = Field(default_factory=dict)
    rl: dict[str, Any] = Field(default_factory=dict)
    evaluate: PipelineEvaluation
    seed: int | None = Field(
        None, description="the pipeline's one seed: every stage's train.seed and the evaluation's (default: the file's)"
    )
    out: Path = out_field("pipeline", "folder for the stage runs and the comparison")

    def stage_config(self, name: str, parent: str | None, out: Path | None = None) -> stage_job.StageConfig:
        """The stage config of stage ``name`` (shared data under its own, the pipeline's seed)."""
        section = dict(getattr(self, name))
        for key in ("stage", "parent", "out"):
            if key in section:
                raise ConfigError(f"{name}.{key}: set by the pipeline; leave it out")
        section["data"] = {**self.data, **(section.get("data") or {})}
        if self.seed is not None:
            section["train"] = {**(section.get("train") or {}), "seed": self.seed}
        values = {**section, "stage": name, "parent": parent, **({} if out is None else {"out": str(out)})}
        return parse_config(stage_job.StageConfig, values, name)

    @property
    def protocol(self) -> Protocol:
        """The evaluation's protocol, with the pipeline's seed."""
        protocol = self.evaluate.protocol
        return protocol if self.seed is None else protocol.model_copy(update={"seed": self.seed})


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and check the whole file, every stage section included, before anything runs."""
    config = read_config(PipelineConfig, path, overrides)
    for name in STAGES:
        config.stage_config(name, None if STAGES[name].from_scratch else "<parent>")
    return config


def _complete(run: Path, stage: str) -> bool:
    try:
        return verify_run(run).get("stage") == stage
    except Exception:  # noqa: BLE001 - missing or damaged: run the stage again
        return False


def run(config: PipelineConfig) -> dict[str, Any]:
    """Run the four stages into ``config.out/stages`` and compare them; return ``metrics.json``'s content."""
    import shutil
    import time

    out = Path(config.out)
    write_config(out, config.model_dump(mode="json"))
    runs: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    parent: str | None = None
    for name in STAGES:
        folder = out / "stages" / name
        stage = config.stage_config(name, parent, folder)
        if not _complete(folder, name):
            shutil.rmtree(folder, ignore_errors=True)  # a half-written stage starts over
            started = time.perf_counter()
            stage_job.run(stage)
            seconds[name] = round(time.perf_counter() - started, 1)
        runs[name], parent = folder, str(folder)
    started = time.perf_counter()
    protocol = config.protocol
    table, details = compare_stages(runs, config.evaluate, protocol)
    metrics = {
        "dataset": config.evaluate.dataset,
        "protocol": protocol.model_dump(mode="json"),
        "stage_seconds": seconds,
        "evaluate_seconds": round(time.perf_counter() - started, 1),
        **details,
        "table": table.replace({np.nan: None}).to_dict(orient="records"),
    }
    metrics = nan_to_none(metrics)
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    paired = paired_table(metrics["paired_vs_pretrain"], protocol.confidence)
    atomic_write_text(out / "comparison.md", markdown_table(table) + "\n" + markdown_table(paired))
    last = list(runs.values())[-1]
    finish_run(out, seed=protocol.seed, trained_through=verify_run(last).get("trained_through"))
    return metrics


def paired_table(paired: dict[str, Any], confidence: float) -> pd.DataFrame:
    """One row per model: its mean difference to pretrain per metric, ``+d [low, high]``."""
    rows = []
    for model, entry in paired.items():
        row = {"model": model}
        for metric, value in entry.items():
            interval = f"{value['difference']:+.4g} [{value['ci_low']:+.4g}, {value['ci_high']:+.4g}]"
            row[f"{metric} - pretrain ({confidence:.0%} CI)"] = interval
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def compare_stages(
    runs: dict[str, Path], settings: PipelineEvaluation, protocol: Protocol
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every stage's run on the windows that are fresh for all of them.

    Returns:
        The table (one row per stage, then the baselines) and details for ``metrics.json``.
    """
    frame = load_data(settings.dataset, settings.options)
    protocol = protocol.model_copy(update={"metrics": ("crps", "directional_accuracy")})
    forecasters: dict[str, Any] = {name: TokenForecaster(run) for name, run in runs.items()}
    tokenizers = {f.meta.get("tokenizer_sha256") for f in forecasters.values()}
    if len(tokenizers) != 1:
        raise ConfigError(f"stages: the runs do not share one tokenizer ({sorted(map(str, tokenizers))})")
    # Baselines fit on what the last stage saw of this dataset; they are a scale, not a contender.
    seen = list(forecasters.values())[-1].trained_through
    assets = [str(a) for a in frame["asset"].unique()]
    cutoff = {a: seen.get(a, frame.loc[frame["asset"] == a, "timestamp"].iloc[0]) for a in assets}
    baselines = {name: make_forecaster(name) for name in settings.baselines}
    if baselines:
        fit_through(baselines, frame, cutoff, protocol.embargo)
    results = evaluate({**forecasters, **baselines}, frame, protocol)
    scores = results.scores
    fresh = scores[scores["window_class"] == "fresh"]
    per_model = {name: set(zip(part["asset"], part["origin"])) for name, part in fresh.groupby("model")}
    common = set.intersection(*(per_model.get(name, set()) for name in forecasters))
    if not common:
        raise ConfigError(
            f"evaluate: no window of {settings.dataset} is fresh for every stage; move the stages' cutoff "
            "earlier or evaluate on later data"
        )
    rows = []
    for name in [*forecasters, *baselines]:
        part = fresh[fresh["model"] == name]
        part = part[[key in common for key in zip(part["asset"], part["origin"])]]
        row: dict[str, Any] = {"model": name, "fresh_windows": int(len(part))}
        if name in forecasters:
            row.update(_code_metrics(forecasters[name], frame, sorted(common), protocol.horizon))
        else:
            row.update({k: np.nan for k in ("accuracy", "top5_accuracy", "perplexity")})
        row["crps"] = float(part["crps"].mean())
        row["directional_accuracy"] = float(part["directional_accuracy"].mean())
        rows.append(row)
    classes = scores.groupby(["model", "window_class"]).size().unstack(fill_value=0)
    kept = fresh[[key in common for key in zip(fresh["asset"], fresh["origin"])]]
    details = {
        "windows": {"common_fresh": len(common), "by_class": classes.to_dict(orient="index")},
        "paired_vs_pretrain": _paired_differences(kept, [*forecasters, *baselines], protocol),
        "runs": {name: str(run) for name, run in runs.items()},
    }
    return pd.DataFrame(rows, columns=["model", "fresh_windows", *_METRICS]), details


def _paired_differences(scores: pd.DataFrame, models: list[str], protocol: Protocol) -> dict[str, Any]:
    """Per model, the mean over the common windows of (its score - pretrain's), with a bootstrap CI.

    The differences are resampled window by window (the same windows for both models), so the
    interval reflects how much the difference, not each score, varies from window to window.
    """
    out: dict[str, Any] = {}
    for index, metric in enumerate(("crps", "directional_accuracy")):
        table = scores.pivot_table(index=["asset", "origin"], columns="model", values=metric)
        for model in models[1:]:
            diff = (table[model] - table[models[0]]).to_numpy(np.float64)
            interval = bootstrap_interval(
                (diff,), n_resamples=protocol.n_bootstrap, confidence=protocol.confidence,
                seed=[protocol.seed, index],
            )
            out.setdefault(model, {})[metric] = {
                "difference": interval["value"], "ci_low": interval["ci_low"], "ci_high": interval["ci_high"]
            }
    return out


def _code_metrics(
    forecaster: Any, frame: pd.DataFrame, windows: list[tuple[str, Any]], horizon: int
) -> dict[str, float]:
    """Teacher-forced next-code metrics of the codes whose last candle lies in each window's horizon.

    Each window's codes are read after the codes before its origin, ``context_length`` codes in
    all, so the input has one length and compiles once.
    """
    import equinox as eqx
    import jax.numpy as jnp

    model = forecaster.model
    scales = forecaster.layout.get("bin_scales")
    scales = None if scales is None else {a: np.asarray(s) for a, s in scales.items()}
    streams = forecaster.tokenizer.code_streams(frame, scales)
    parts = {str(a): p.reset_index(drop=True) for a, p in frame.groupby("asset", sort=False)}
    score = eqx.filter_jit(lambda m, codes, exo: m(codes, **({} if exo is None else {"exo": exo}))[0])
    logits_all, targets_all = [], []
    for asset, origin in windows:
        codes, ends = streams[asset]
        stamps = parts[asset]["timestamp"].to_numpy()
        row = int(np.searchsorted(stamps, np.datetime64(origin) if isinstance(origin, pd.Timestamp) else origin))
        target = (ends >= row) & (ends < row + horizon)
        if not target.any():
            continue
        first, count = int(np.flatnonzero(target)[0]), int(target.sum())
        begin = max(0, first + count - 1 - int(model.config.context_length))
        sequence = codes[begin : first + count]
        exo = None
        if model.uses_exo:
            series = exo_series(parts[asset], ends, forecaster.columns, forecaster.layout["exo"])
            exo = jnp.asarray(series[begin : first + count - 1])
        logits = score(model, jnp.asarray(sequence[:-1]), exo)
        logits_all.append(np.asarray(logits)[-count:])
        targets_all.append(sequence[-count:])
    if not logits_all:
        return {"accuracy": np.nan, "top5_accuracy": np.nan, "perplexity": np.nan}
    summary = next_token_metrics(np.concatenate(logits_all), np.concatenate(targets_all))
    return {name: summary[name] for name in ("accuracy", "top5_accuracy", "perplexity")}
