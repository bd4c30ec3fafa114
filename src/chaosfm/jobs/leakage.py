"""``chaosfm leakage``: does pretraining an encoder on every date make "out-of-sample" look better?

For each model (``jepa``, ``jepa_cfm``) the encoder is pretrained twice on the same datasets:

* **leaky**: on every row before the fresh start (the usual protocol: the foundation encoder has
  seen the period the downstream head is later "tested" on);
* **fenced**: only on rows up to the pretrain cutoff.

The same downstream heads are fitted on rows up to the pretrain cutoff: ridge probes of the next
``horizon`` return and realized volatility, and the :class:`~chaosfm.forecasters.JEPAForecaster`, whose forecasts are
scored by CRPS (in percent of the last close) and traded by a long/short rule (Sharpe ratio with its confidence interval).
Windows are labelled by the evaluator from the ``trained_through`` records in the run folders,
never by hand: ``in_sample`` (in-domain: the head saw them), ``within_pretrain`` (the head did not,
the encoder did), ``fresh`` (nothing did, past the embargo). The leakage gap is
``fresh - within_pretrain`` with a confidence interval. The fenced encoder has no
within-pretrain windows (its post-cutoff windows are fresh); on the windows between the cutoff
and the fresh start, which both encoders score, the paired difference leaky - fenced is reported
as ``same_windows``.

Built-in data cover different years (sp500, nasdaq: 1999-2018; ndx, n225: 1990-2001), so dates
are given once for all datasets or one per dataset (``sp500=2010-12-31,ndx=1996-12-31``); left
out, the cutoff is each dataset's row at ``pretrain_fraction`` (the one cutoff rule of every
command, at the study's own fraction) and the fresh start the row after its row at
``fresh_fraction``.

With ``agent`` (``--agent qrdqn`` or ``--agent tdmpc2``; a bare ``--agent`` or ``agent: true``
is ``qrdqn``) the heads are replaced by that cross-sectional trading agent of ``chaosfm agent
train``: the same recipe on each encoder's frozen embeddings (and on the features alone), scored in Sharpe ratios per window class, with the gap and the paired leaky - fenced
difference on the same dates (:mod:`chaosfm.jobs._leakage_agent`).

The study has one seed, ``seed``: it is every encoder's ``train.seed`` (initial weights, batches,
the loop's keys), every tokenizer's fit key, the readouts' flow draws and the evaluation's keys
and bootstraps; every ``meta.json`` of the study records it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BeforeValidator, ConfigDict, Field, field_validator
from scipy import stats

from chaosfm._artifacts import atomic_write_text, nan_to_none, sha256, write_json
from chaosfm._config import ConfigError, split_commas
from chaosfm._progress import say
from chaosfm.data import TimeFence, trained_through_to_json
from chaosfm.evaluate import Protocol, bootstrap_interval, evaluate, fit_through, probe_scores, sharpe_ratio, sharpe_standard_error
from chaosfm.forecasters import JEPAForecaster, probe_windows
from chaosfm.jobs import pretrain as pretrain_job
from chaosfm.jobs._common import (
    DatasetNames,
    ReadOptions,
    finish_run,
    load_data,
    out_field,
    parse_cutoff,
    resolve_fence,
    write_config,
)
from chaosfm.jobs._leakage_agent import agent_report_lines, agent_study, agent_tables, interval_sign
from chaosfm.jobs.agent import AGENTS
from chaosfm.jobs.train import TokenizerSection
from chaosfm.train import TrainConfig, load_pretrained

__all__ = ["FLAGS", "LeakageConfig", "leakage_tables", "run"]

FLAGS = {"cutoff": "pretrain_cutoff", "steps": "train.steps", "tokenizer": "tokenizer.kind",
         "tokenizer_steps": "tokenizer.steps"}
"""CLI flag -> config key."""

PROTOCOLS = ("leaky", "fenced")
_TIMINGS = ("elapsed_s", "tokens_per_s")
_RANGES = "sp500 and nasdaq span 1999-2018, ndx and n225 1990-2001"


def _default_train() -> TrainConfig:
    return TrainConfig(steps=300, batch_size=16, learning_rate=2e-3, warmup_steps=30, checkpoint_every=300, log_every=25)


class LeakageConfig(ReadOptions):
    """``chaosfm leakage``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    data: DatasetNames = Field(description="market datasets (built-in names or paths)")
    pretrain_cutoff: str | dict[str, str] | None = Field(
        None, description="fenced encoders and every head see rows up to here: DATE or NAME=DATE,..."
    )
    fresh_start: str | dict[str, str] | None = Field(
        None, description="leaky encoders see rows before here; fresh windows start after it"
    )
    pretrain_fraction: float = Field(0.5, gt=0, lt=1, description="default pretrain cutoff, fraction of rows")
    fresh_fraction: float = Field(0.75, gt=0, lt=1, description="default fresh start, fraction of rows")
    models: Annotated[list[Literal["jepa", "jepa_cfm"]], BeforeValidator(split_commas)] = Field(default_factory=lambda: ["jepa", "jepa_cfm"])
    cfm_weight: float = Field(1.0, gt=0, description="share of the flow-matching loss of jepa_cfm")
    model: dict[str, Any] = Field(default_factory=dict, description="JEPAConfig fields shared by the models")
    tokenizer: TokenizerSection | None = Field(
        None, description="encoders read codes of this candle tokenizer (fitted once per protocol); none: features"
    )
    train: TrainConfig = Field(default_factory=_default_train)
    horizon: int = Field(5, ge=1)
    num_samples: int = Field(50, ge=2)
    embargo: int = Field(5, ge=0)
    max_windows: int | None = Field(150, ge=10, description="scored origins per dataset (CRPS, Sharpe)")
    alpha: float = Field(1.0, gt=0, description="ridge penalty of probes and readouts")
    n_bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    agent: str | None = Field(None, description="score this cross-sectional agent (qrdqn or tdmpc2, as `chaosfm "
                                                "agent train --agent`; true means qrdqn) on each encoder (Sharpe) "
                                                "instead of the forecasting heads")
    agent_options: dict[str, Any] = Field(default_factory=dict, description="`chaosfm agent train` keys for the "
                                          "agent of --agent: env, critic, portfolios, iterations, ...")
    agent_portfolios: int = Field(256, ge=1, description="portfolios of each scored book (--agent)")
    sizes: Annotated[list[str] | None, BeforeValidator(split_commas)] = Field(
        None, description="the capacity grid's encoder sizes (nano, tiny, small, medium); one study per cell")
    cfm_weights: Annotated[list[float] | None, BeforeValidator(split_commas)] = Field(
        None, description="the capacity grid's flow-matching weights (0: no flow head)")
    fast: bool = Field(False, description="the capacity grid's fast setting: nano,tiny x 0,1, three steps per encoder")
    seed: int = 0
    out: Path = out_field("leakage")

    @field_validator("agent", mode="before")
    @classmethod
    def _agent_name(cls, agent: Any) -> str | None:
        if agent is True:  # `agent: true`, written when the key was a switch for the one agent there was
            return "qrdqn"
        if agent is False or agent is None:
            return None
        if agent not in AGENTS:
            raise ValueError(f"must be one of {sorted(AGENTS)} (or true, meaning qrdqn), got {agent!r}")
        return agent


def _resolve(frame: pd.DataFrame, config: LeakageConfig, window: int) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Per asset ``(pretrain_cutoff, fresh_start)``, checked against that asset's rows."""
    assets = [str(a) for a in pd.unique(frame["asset"])]
    for key, given in (("pretrain_cutoff", parse_cutoff(config.pretrain_cutoff)),
                       ("fresh_start", parse_cutoff(config.fresh_start))):
        missing = [a for a in assets if a not in given] if isinstance(given, dict) else []
        if missing:
            raise ConfigError(f"{key}: no date for {missing[0]!r}; give one per dataset ({', '.join(sorted(given))} given)")
    cutoffs = resolve_fence(frame, config.pretrain_cutoff, config.pretrain_fraction, key="pretrain_cutoff")
    starts = parse_cutoff(config.fresh_start)
    if starts is None:
        # The first row after the fresh fraction: the row after that fraction's cutoff.
        at = resolve_fence(frame, None, config.fresh_fraction, key="fresh_start").per_asset(frame)
        starts = {}
        for asset, part in frame.groupby("asset", sort=False):
            stamps = part["timestamp"].reset_index(drop=True)
            later = stamps[stamps > at[str(asset)]]
            starts[str(asset)] = later.iloc[0] if len(later) else stamps.iloc[-1]
    out = {}
    for asset, part in frame.groupby("asset", sort=False):
        asset = str(asset)
        stamps = part["timestamp"].reset_index(drop=True)
        first, last = stamps.iloc[0].date(), stamps.iloc[-1].date()
        cutoff = cutoffs.per_asset(part)[asset]
        given = starts.get(asset) if isinstance(starts, dict) else starts
        if given is None:
            raise ConfigError(f"fresh_start: no date for {asset!r}; give one per dataset ({', '.join(sorted(starts))} given)")
        try:
            fresh = pd.Timestamp(given)
        except (ValueError, TypeError):
            raise ConfigError(f"fresh_start: {given!r} is not a date") from None
        before = int((stamps <= cutoff).sum())
        after = int((stamps >= fresh).sum())
        if not stamps.iloc[0] < cutoff < fresh <= stamps.iloc[-1]:
            raise ConfigError(
                f"{asset}: needs {first} < pretrain_cutoff ({cutoff.date()}) < fresh_start ({fresh.date()}) "
                f"<= {last}, the dataset's range ({_RANGES}); give one date per dataset, e.g. "
                "--cutoff sp500=2010-12-31,ndx=1996-12-31"
            )
        need = window + 60
        if before < need or after < need:
            raise ConfigError(
                f"{asset}: {before} rows up to the pretrain cutoff and {after} from the fresh start; "
                f"each side needs at least {need} (the encoder window plus feature warm-up and a few windows)"
            )
        out[asset] = (cutoff, fresh)
    return out


def _tokenizer(config: LeakageConfig, frame: pd.DataFrame, protocol: str, cutoffs: dict[str, str]) -> TokenizerSection | None:
    """The protocol's candle tokenizer, fitted once on its encoders' rows and shared by them (so
    ``jepa`` and ``jepa_cfm`` read the same codes): a saved-tokenizer section for pretraining."""
    section = config.tokenizer
    if section is None or section.path is not None:
        return section
    folder = config.out / "tokenizers" / protocol
    wanted = {"tokenizer": section.model_dump(mode="json"), "cutoff": cutoffs, "seed": config.seed}
    record = folder / "fit.json"
    if (folder / "tokenizer.json").is_file() and record.is_file() and json.loads(record.read_text()) == wanted:
        say(f"reusing {folder}: same tokenizer and cutoff, already fitted")
        return TokenizerSection(path=str(folder))
    fence = pretrain_job.PretrainData(names=config.data, cutoff=cutoffs, embargo=config.embargo).fence(frame)
    say(f"fitting the {section.kind} tokenizer of the {protocol} encoders ({section.steps} steps)")
    train_rows = fence.train(frame)
    tokenizer, _ = section.build(train_rows=train_rows, fence=fence)
    section.fit(tokenizer, train_rows, fence, config.seed)
    tokenizer.save(folder)
    write_json(record, wanted)
    finish_run(folder, seed=config.seed, trained_through=trained_through_to_json(tokenizer.trained_through),
               kind="tokenizer", command="leakage")
    return TokenizerSection(path=str(folder))


def _pretrain(
    config: LeakageConfig, frame: pd.DataFrame, kind: str, protocol: str, cutoffs: dict[str, str],
    tokenizer: TokenizerSection | None,
) -> Path:
    run = config.out / "runs" / f"{kind}-{protocol}"
    model = {**config.model, "cfm_weight": config.cfm_weight if kind == "jepa_cfm" else 0.0}
    pretrain = pretrain_job.PretrainConfig(
        data=pretrain_job.PretrainData(names=config.data, cutoff=cutoffs, embargo=config.embargo),
        model=model,
        train=config.train.model_copy(update={"seed": config.seed}),
        tokenizer=tokenizer,
        out=run,
    )
    wanted = pretrain.model_dump(mode="json", exclude={"out", "resume"})
    # The resolved model config too: a changed JEPAConfig default must not reuse a stale encoder.
    resolved = json.loads(json.dumps(dataclasses.asdict(pretrain.jepa_config())))
    if (
        (run / "meta.json").is_file()
        and yaml.safe_load((run / "config.yaml").read_text()) == wanted
        and (run / "model_config.json").is_file()
        and json.loads((run / "model_config.json").read_text()) == resolved
        and (tokenizer is None or _same_file(Path(tokenizer.path) / "model.eqx", run / "tokenizer" / "model.eqx"))
    ):
        say(f"reusing {run}: same config, already trained")
        return run
    if run.exists():
        shutil.rmtree(run)  # a stale or different run of this study; the study owns the folder
    pretrain_job.run(pretrain, frame=frame)
    return run


def _same_file(a: Path, b: Path) -> bool:
    """A refitted tokenizer (same folder, new weights) makes an encoder trained on the old one stale."""
    return a.is_file() and b.is_file() and sha256(a) == sha256(b)


def _sharpe(returns: np.ndarray, periods_per_year: float) -> dict[str, float | None]:
    returns = returns[np.isfinite(returns)]
    if returns.size < 3 or np.std(returns) == 0:
        return {"value": None, "se": None, "n_windows": int(returns.size)}
    scale = np.sqrt(periods_per_year)
    return {
        "value": float(sharpe_ratio(returns)) * scale,
        "se": float(sharpe_standard_error(returns)) * scale,
        "n_windows": int(returns.size),
    }


def _gap(fresh: dict[str, Any], within: dict[str, Any], confidence: float) -> dict[str, float | None]:
    if fresh.get("value") is None or within.get("value") is None:
        return {"value": None, "ci_low": None, "ci_high": None}
    value = fresh["value"] - within["value"]
    z = stats.norm.ppf((1 + confidence) / 2) * np.hypot(fresh["se"], within["se"])
    return {"value": value, "ci_low": value - z, "ci_high": value + z}


def _same_windows(scores: pd.DataFrame, leaky: str, fenced: str, start: dict[str, Any], cutoff: dict[str, Any],
                  config: LeakageConfig) -> dict[str, Any]:
    """Leaky minus fenced on the windows between the cutoff and the fresh start, paired."""
    keys = ["asset", "origin"]
    a, b = scores[scores["model"] == leaky], scores[scores["model"] == fenced]
    both = a.merge(b, on=keys, how="inner", suffixes=("_leaky", "_fenced"))
    mid = np.array([cutoff[r.asset] < r.origin < start[r.asset] for r in both.itertuples(index=False)], bool)
    both = both[mid]
    out: dict[str, Any] = {"n_windows": int(len(both))}
    if len(both) < 3:
        return out
    diff = (both["crps_pct_leaky"] - both["crps_pct_fenced"]).to_numpy()
    out["crps_pct"] = bootstrap_interval((diff,), n_resamples=config.n_bootstrap, confidence=config.confidence,
                                         seed=config.seed)
    return out


def run(config: LeakageConfig) -> dict[str, Any]:
    """Pretrain leaky and fenced encoders, fit the heads, score per window class; write the folder.
    With ``sizes``, ``cfm_weights`` or ``fast``, the capacity grid instead (:mod:`chaosfm.jobs._capacity`).

    Writes ``config.yaml``, ``metrics.json``, ``report.md``, ``scores.csv``, ``runs/<model>-<protocol>/``
    (the pretrain runs) and ``meta.json``; returns the metrics.
    """
    if config.sizes or config.cfm_weights or config.fast:
        from chaosfm.jobs._capacity import run_grid

        return run_grid(config, run)
    started = time.perf_counter()
    if config.tokenizer is not None:
        config.tokenizer.check("tokenizer", config.seed)
    frame = load_data(config.data, read=config)
    probe = pretrain_job.PretrainConfig(
        data=pretrain_job.PretrainData(names=config.data), model={**config.model, "cfm_weight": 0.0},
        tokenizer=config.tokenizer,
    )
    window = probe.jepa_config().context_length
    dates = _resolve(frame, config, window)
    out = config.out
    write_config(out, config)
    cutoff = {a: c for a, (c, _) in dates.items()}
    fresh = {a: f for a, (_, f) in dates.items()}
    last_before_fresh = {
        a: str(part.loc[part["timestamp"] < fresh[a], "timestamp"].iloc[-1].date())
        for a, part in frame.groupby("asset", sort=False)
    }
    fences = {"leaky": last_before_fresh, "fenced": {a: str(c.date()) for a, c in cutoff.items()}}
    forecasters, runs = {}, {}
    tokenizers = {protocol: _tokenizer(config, frame, protocol, fences[protocol]) for protocol in PROTOCOLS}
    for kind in config.models:
        for protocol in PROTOCOLS:
            runs[f"{kind} ({protocol})"] = _pretrain(config, frame, kind, protocol, fences[protocol],
                                                     tokenizers[protocol])
    if config.agent:
        return _finish_agent_study(config, frame, dates, runs, started)
    for name, run_dir in runs.items():
        forecasters[name] = JEPAForecaster(run_dir, horizon=config.horizon, alpha=config.alpha, name=name,
                                           seed=config.seed)
        if name.endswith("(fenced)"):
            # The fence is checked on what the artifacts say they saw, not on the config.
            for seen in forecasters[name].upstream_trained_through():
                TimeFence(cutoff).check_trained_through(seen, f"{run_dir}")
    fit_through(forecasters, frame, cutoff, config.embargo)
    context = max(f.min_context() for f in forecasters.values())
    protocol = Protocol(
        horizon=config.horizon, num_samples=config.num_samples, context_length=context, min_context=context,
        step=config.horizon, embargo=config.embargo, metrics=("crps_pct", "long_short_return"),
        max_windows=config.max_windows, n_bootstrap=config.n_bootstrap, confidence=config.confidence,
        seed=config.seed,
    )
    results = evaluate(forecasters, frame, protocol, cutoff=cutoff)
    summary = results.summary()
    periods = 252.0 / config.horizon
    models: dict[str, Any] = {}
    for name, forecaster in forecasters.items():
        rows = results.scores[results.scores["model"] == name]
        sharpe = {
            c: _sharpe(rows.loc[rows["window_class"] == c, "long_short_return"].to_numpy(float), periods)
            for c in ("in_sample", "within_pretrain", "fresh")
        }
        sharpe["leakage_gap"] = _gap(sharpe["fresh"], sharpe["within_pretrain"], config.confidence)
        run_metrics = yaml.safe_load((runs[name] / "metrics.json").read_text())
        models[name] = {
            "run": str(runs[name].relative_to(out)),
            "params": run_metrics["params"],
            "input": run_metrics.get("input", "features"),
            "encoder_trained_through": trained_through_to_json(forecaster.encoder_trained_through),
            "tokenizer_trained_through": trained_through_to_json(forecaster.tokenizer_trained_through or None),
            "heads_trained_through": trained_through_to_json(forecaster.trained_through),
            # The loop's timings (elapsed_s, tokens_per_s) stay in the run's own metrics: results only here.
            "pretrain": {"final": {k: v for k, v in run_metrics["final"].items() if k not in _TIMINGS},
                         "heldout": run_metrics["heldout"],
                         "variance_target_std": run_metrics["variance_target_std"]},
            "crps_pct": {c: summary[name][c] for c in ("in_sample", "within_pretrain", "fresh")}
            | {"leakage_gap": summary[name]["leakage_gap"]["crps_pct"]},
            "sharpe": sharpe,
            "probe_r2": _probes(runs[name], frame, cutoff, config),
        }
    same = {
        kind: _same_windows(results.scores, f"{kind} (leaky)", f"{kind} (fenced)", fresh, cutoff, config)
        for kind in config.models
    }
    metrics = {
        "datasets": config.data,
        "dates": {a: {"pretrain_cutoff": str(c.date()), "fresh_start": str(f.date())} for a, (c, f) in dates.items()},
        "horizon": config.horizon,
        "embargo": config.embargo,
        "sharpe_periods_per_year": periods,
        "models": models,
        "same_windows_leaky_minus_fenced": same,
    }
    # metrics.json holds results only (two runs with one seed write the same file); the wall time
    # goes to the report and meta.json.
    metrics = nan_to_none(metrics)
    seconds = round(time.perf_counter() - started, 1)
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "scores.csv", results.scores.to_csv(index=False))
    atomic_write_text(out / "report.md", _report(metrics, config, seconds))
    finish_run(out, seed=config.seed, trained_through=None, kind="leakage_study", wall_time_s=seconds)
    return metrics


def _finish_agent_study(config: LeakageConfig, frame: pd.DataFrame, dates: dict[str, Any], runs: dict[str, Path],
                        started: float) -> dict[str, Any]:
    """``--agent``: the agents on every encoder, scored in Sharpe (:mod:`chaosfm.jobs._leakage_agent`)."""
    study = agent_study(config, frame, dates, runs)
    metrics = nan_to_none({
        "datasets": config.data,
        "dates": {a: {"pretrain_cutoff": str(c.date()), "fresh_start": str(f.date())} for a, (c, f) in dates.items()},
        "embargo": config.embargo,
        "runs": {name: str(run.relative_to(config.out)) for name, run in runs.items()},
        **study,
    })
    seconds = round(time.perf_counter() - started, 1)
    write_json(config.out / "metrics.json", metrics)
    first = next(iter(metrics["dates"].values()))
    agent = metrics["agent"]
    lines = ["# Leakage study: the agent", "",
             f"Data {', '.join(config.data)} ({len(dates)} assets; cutoff {first['pretrain_cutoff']}, fresh from "
             f"{first['fresh_start']}); the agent: {agent['label']}, CVaR {agent['alpha']:g} on the features alone, "
             f"{agent['n_assets']} assets per "
             f"portfolio, {agent['holding']}-row holds, {agent['cost_bps']:g} bp costs, {agent['iterations']} "
             f"iterations; each book a fund of {agent['portfolios']} portfolios on one rebalance calendar; "
             f"{agent['n_trials']} agents (the DSR's trials).", "",
             "Leakage gap = fresh - within-pretrain Sharpe with its 95% bootstrap interval. Periods come from the run",
             "folders' `trained_through`; a fenced encoder's agent has no within-pretrain rows.", ""]
    lines += agent_report_lines(metrics, list(config.models))
    lines += ["", f"Wall time {seconds} s."]
    atomic_write_text(config.out / "report.md", "\n".join(lines) + "\n")
    finish_run(config.out, seed=config.seed, trained_through=None, kind="leakage_study", wall_time_s=seconds)
    return metrics


def _probes(run: Path, frame: pd.DataFrame, cutoff: dict[str, Any], config: LeakageConfig) -> dict[str, Any]:
    """Ridge probes of one encoder's frozen embeddings, scored per window class."""
    model, inputs, meta = load_pretrained(run)
    windows = probe_windows(model, inputs, frame, horizon=config.horizon, step=config.horizon)
    upstream = [meta["trained_through"] or {}, meta["upstream_trained_through"] or {}]
    return probe_scores(windows, frame, cutoff, upstream, embargo=config.embargo, alpha=config.alpha,
                        n_bootstrap=config.n_bootstrap, confidence=config.confidence, seed=config.seed)


def _cell(entry: dict[str, Any] | None, key: str = "value", digits: int = 3) -> str:
    value = None if entry is None else entry.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def _gap_cell(gap: dict[str, Any], digits: int = 3) -> str:
    if gap.get("value") is None:
        return "–"
    return f"{gap['value']:+.{digits}f} [{gap['ci_low']:+.{digits}f}, {gap['ci_high']:+.{digits}f}]"


def leakage_tables(metrics: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Title -> table with columns model, params, in-domain, within-pretrain OOS, fresh OOS, leakage gap
    (the agent study's tables for the metrics of ``--agent``)."""
    if "agents" in metrics:
        return agent_tables(metrics)
    if "cells" in metrics:
        from chaosfm.jobs._capacity import capacity_table

        return {"capacity study: leakage over encoder size and flow weight": capacity_table(pd.DataFrame(metrics["cells"]))}
    specs = {
        "probe R² (realized volatility)": lambda m: (m["probe_r2"]["realized_vol"], "r2", 3),
        "probe R² (next-horizon return)": lambda m: (m["probe_r2"]["next_return"], "r2", 3),
        "CRPS, % of the last close (lower is better)": lambda m: (m["crps_pct"], "crps_pct", 3),
        "Sharpe of the long/short rule (annualised, ± 95% SE)": lambda m: (m["sharpe"], "value", 2),
    }
    tables = {}
    for title, pick in specs.items():
        rows = []
        for name, entry in metrics["models"].items():
            block, key, digits = pick(entry)
            cells = []
            for window_class in ("in_sample", "within_pretrain", "fresh"):
                part = block[window_class]
                text = _cell(part, key, digits)
                if key == "value" and part.get("se") is not None:
                    text += f" ± {1.96 * part['se']:.{digits}f}"
                n = part.get("n_windows")
                cells.append(f"{text} (n={n})" if n is not None else text)
            rows.append([name, f"{entry['params']:,}", *cells, _gap_cell(block["leakage_gap"], digits)])
        tables[title] = pd.DataFrame(
            rows, columns=["model", "params", "in-domain", "within-pretrain OOS", "fresh OOS", "leakage gap"]
        )
    return tables


def _sign(entry: dict[str, Any] | None) -> str:
    return interval_sign(entry, missing="not measurable (too few windows)")


def _reading(kind: str, metrics: dict[str, Any]) -> str:
    """One sentence per model, generated from the numbers: what the gap and the paired test say."""
    gap = metrics["models"].get(f"{kind} (leaky)", {}).get("crps_pct", {}).get("leakage_gap")
    same = metrics["same_windows_leaky_minus_fenced"].get(kind, {}).get("crps_pct")
    return (
        f"- {kind}: the CRPS leakage gap (fresh - within-pretrain) is {_gap_cell(gap or {}, 3)}, "
        f"{_sign(gap)}; on the same windows the leaky encoder's CRPS minus the fenced one's is "
        f"{_gap_cell(same or {}, 3)}, {_sign(same)}. A gap with no same-window difference comes from "
        "the periods differing (the fresh period is harder or easier), not from what the encoder saw."
    )


def _report(metrics: dict[str, Any], config: LeakageConfig, seconds: float) -> str:
    lines = ["# Leakage study", ""]
    dates = ", ".join(f"{a}: cutoff {d['pretrain_cutoff']}, fresh from {d['fresh_start']}" for a, d in metrics["dates"].items())
    reads = (f"codes of a {config.tokenizer.kind or 'saved'} candle tokenizer fitted per protocol on the encoders' rows"
             if config.tokenizer is not None else "standardised candle features")
    lines += [f"Data {', '.join(config.data)} ({dates}); horizon {config.horizon}, embargo {config.embargo}; "
              f"the encoders read {reads}.", ""]
    lines += ["Leakage gap = fresh - within-pretrain, with its 95% confidence interval. Window classes come from",
              "the run folders' `trained_through`; a fenced encoder has no within-pretrain windows.", ""]
    for title, table in leakage_tables(metrics).items():
        lines += [f"## {title}", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        lines.append("")
    lines += ["## Same windows, leaky minus fenced (between the cutoff and the fresh start)", ""]
    for kind, entry in metrics["same_windows_leaky_minus_fenced"].items():
        lines.append(f"- {kind}: CRPS (% of close) {_gap_cell(entry.get('crps_pct') or {}, 3)} over {entry['n_windows']} windows")
    lines += ["", "## Reading", ""]
    for kind in config.models:
        lines.append(_reading(kind, metrics))
    lines += ["", f"Wall time {seconds} s."]
    return "\n".join(lines) + "\n"
