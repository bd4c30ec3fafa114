"""``chaosfm backtest``: trade the forecasts of an evaluation run and say how much to believe it.

It reads ``forecasts.parquet`` and ``config.yaml`` of a ``chaosfm evaluate`` run folder, loads the
data the evaluation scored (its ``datasets``) for the entry closes, trades every model by every
rule (:func:`chaosfm.evaluate.backtest`) and writes a new run folder: ``metrics.json`` (per
strategy: Sharpe with SE and interval, PSR, DSR, PBO of the set, returns, drawdown, turnover,
costs, the same per leakage class), ``pnl.parquet`` (one row per strategy, asset or
``portfolio``, and timestamp), ``report.html`` (the tearsheet), ``config.yaml`` and ``meta.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, write_json
from chaosfm._config import CommaList, ConfigError, parse_config, read_config, read_yaml
from chaosfm._progress import status
from chaosfm.evaluate import RULES, BacktestSettings, backtest, backtest_statistics
from chaosfm.jobs._common import finish_run, load_data, out_field, write_config
from chaosfm.jobs.evaluate import EvaluateConfig
from chaosfm.report import tearsheet_section, write_report

__all__ = ["FLAGS", "BacktestConfig", "read", "run"]

FLAGS = {"eval_dir": "run", "rule": "rules"}
"""CLI flag (argparse dest) -> config key, where they differ; every other flag is its own key."""

FORECASTS = "forecasts.parquet"


class BacktestConfig(BaseModel):
    """``chaosfm backtest``: which evaluation, which rules and models, how long to hold, what it costs."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="run folder of `chaosfm evaluate` (holds forecasts.parquet and config.yaml)")
    rules: CommaList = Field(default_factory=lambda: ["sign_median"], description=f"rules: {', '.join(RULES)}")
    models: CommaList | None = Field(None, description="models to trade; default: every model of the forecasts")
    holding: int | None = Field(None, ge=1, description="rows a position is held (<= horizon); default: the horizon")
    cost_bps: float = Field(1.0, ge=0, allow_inf_nan=False, description="proportional cost, bps of capital traded")
    impact: float = Field(0.0, ge=0, allow_inf_nan=False, description="quadratic impact: impact * trade^2")
    target_volatility: float = Field(0.10, gt=0, allow_inf_nan=False, description="vol_target's annual volatility")
    max_leverage: float = Field(2.0, gt=0, allow_inf_nan=False, description="cap on |position| for kelly, vol_target")
    long_short_fraction: float = Field(0.5, gt=0, le=0.5, description="long_short: top/bottom fraction of assets")
    periods_per_year: float = Field(252.0, gt=0, description="rows per year, to annualise")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the Sharpe interval")
    pbo_blocks: int = Field(16, ge=2, multiple_of=2, description="CSCV blocks for PBO (even)")
    rolling_window: int = Field(63, ge=3, description="rows of the tearsheet's rolling Sharpe ratio")
    out: Path = out_field("backtest")
    title: str = "chaosfm backtest"

    def settings(self) -> BacktestSettings:
        """The library's settings of this config."""
        return BacktestSettings(
            holding=self.holding, cost_bps=self.cost_bps, impact=self.impact,
            target_volatility=self.target_volatility, max_leverage=self.max_leverage,
            long_short_fraction=self.long_short_fraction, periods_per_year=self.periods_per_year,
        )


def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> BacktestConfig:
    """The config file (optional) with flag ``overrides`` (dotted keys) on top.

    Raises:
        ConfigError: a key is unknown or a value is wrong, or a rule is unknown.
    """
    config = read_config(BacktestConfig, path, overrides)
    unknown = [name for name in config.rules if name not in RULES]
    if unknown or not config.rules:
        raise ConfigError(f"rules: unknown rule(s) {unknown}; known rules: {', '.join(RULES)}")
    return config


def _forecasts(config: BacktestConfig) -> tuple[pd.DataFrame, EvaluateConfig]:
    """The evaluation's forecasts (checked against the config) and its resolved config."""
    folder = Path(config.run)
    if not folder.is_dir():
        raise ConfigError(f"run: {folder} is not a folder; give the run folder of `chaosfm evaluate`")
    path = folder / FORECASTS
    # A run that mixed market data and trajectories (the demo) wrote one file per dataset.
    paths = [path] if path.is_file() else sorted(folder.glob("forecasts-*.parquet"))
    if not paths:
        raise ConfigError(f"run: {path} does not exist; run `chaosfm evaluate --out {folder}` first")
    evaluation = parse_config(EvaluateConfig, read_yaml(folder / "config.yaml"), str(folder / "config.yaml"))
    tables = [pd.read_parquet(p) for p in paths]
    market = [t for t in tables if len(t) and set(t["column"]) == {"close"}]
    if not market:
        columns = sorted({c for t in tables for c in t["column"].unique()})
        why = "no window was scored" if not columns else f"they forecast {columns}, not market closes"
        raise ConfigError(f"run: {', '.join(p.name for p in paths)} in {folder}: nothing to trade: {why}")
    forecasts = pd.concat(market, ignore_index=True)
    path = paths[0] if len(paths) == 1 else folder
    known = list(dict.fromkeys(forecasts["model"]))
    missing = [m for m in config.models or [] if m not in known]
    if missing:
        raise ConfigError(f"models: {missing} are not in {path}; it holds {', '.join(known)}")
    horizon = int(forecasts["step"].max())
    if config.holding is not None and config.holding > horizon:
        raise ConfigError(f"holding: {config.holding} exceeds the horizon {horizon} of {path}; hold at most {horizon}")
    return forecasts, evaluation


def _closes(evaluation: EvaluateConfig, datasets: set[str]) -> pd.DataFrame:
    """``dataset, asset, timestamp, close`` of the evaluation's ``datasets`` (its market data)."""
    parts = []
    for spec in evaluation.datasets:
        if spec.name not in datasets and Path(spec.name).stem not in datasets:
            continue  # a trajectory of the same evaluation: nothing to trade, no need to load it
        frame = load_data(spec.name, spec.options, evaluation)
        dataset = str(frame.attrs.get("name", spec.name))
        parts.append(frame[["asset", "timestamp", "close"]].assign(dataset=dataset))
    return pd.concat(parts, ignore_index=True)


def _describe(config: BacktestConfig, holding: int, folder: Path) -> str:
    return (f"Forecasts of {folder}, traded by {', '.join(config.rules)}: a position is taken at the close "
            f"before each forecast's first target and held {holding} rows; costs {config.cost_bps:g} bps of "
            f"the capital traded plus {config.impact:g} × trade²; {config.periods_per_year:g} rows a year.")


def run(config: BacktestConfig) -> dict[str, Any]:
    """Backtest an evaluation's forecasts and write the run folder; return the ``metrics.json`` content.

    Raises:
        ConfigError: the evaluation folder lacks its forecasts or config, a model or the holding
            does not fit them, the forecasts do not match the data, or ``out`` already holds a run.
    """
    forecasts, evaluation = _forecasts(config)
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out: {out} already holds files (a run?); choose a new folder or delete it")
    with status("loading the evaluation's data"):
        closes = _closes(evaluation, set(forecasts["dataset"]))
    try:
        pnl = backtest(forecasts, closes, config.rules, config.settings(), config.models)
    except ValueError as error:  # the forecasts do not fit the data or the rules (DataError included)
        raise ConfigError(f"run: {config.run / FORECASTS}: {error}") from None
    statistics = backtest_statistics(pnl, periods_per_year=config.periods_per_year, confidence=config.confidence,
                                     pbo_blocks=config.pbo_blocks)
    holding = config.holding or int(forecasts["step"].max())
    metrics = nan_to_none({
        "run": str(config.run), "holding": holding, "cost_bps": config.cost_bps, "impact": config.impact,
        "periods_per_year": config.periods_per_year, **statistics,
    })
    write_config(out, config)
    write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "pnl.parquet", pnl.to_parquet(index=False))
    section = tearsheet_section(pnl, metrics, description=_describe(config, holding, Path(config.run)),
                                periods_per_year=config.periods_per_year, rolling_window=config.rolling_window)
    write_report(out / "report.html", config.title, [section])
    finish_run(out, seed=None, evaluation=str(config.run))
    return metrics
