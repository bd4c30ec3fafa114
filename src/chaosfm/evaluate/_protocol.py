"""``evaluate(forecasters, frame, protocol) -> Results``: the leakage-aware evaluation.

Forecast origins walk forward through every asset of the frame. Each window is classified for
each forecaster from ``trained_through`` records, never by hand:

- ``in_sample``: the forecaster itself saw a timestamp of the window's targets;
- ``within_pretrain``: it did not, but an upstream artifact (tokenizer, pretrained encoder) did;
- ``fresh``: nothing upstream saw the window, and it starts at least ``embargo`` observations
  after the last one anything saw;
- otherwise the window sits in the embargo and is not scored (counted as ``n_embargoed``).

Scores are averaged per class, and the leakage gap ``fresh - within_pretrain`` is reported per
score with a bootstrap confidence interval (windows resampled within each class). Models are
compared (:meth:`Results.compared`) only on the windows of a class that every one of them scored.
With ``keep_forecasts=True`` the forecasts behind the scores are kept too (:class:`ForecastTable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import nan_to_none  # noqa: F401 - re-exported
from chaosfm._progress import progress
from chaosfm.data import TimeFence, frame_kind, latest_seen, split_assets, target_columns, time_step
from chaosfm.evaluate._bootstrap import bootstrap_interval, mean_difference, no_interval
from chaosfm.evaluate._forecasts import ForecastTable
from chaosfm.evaluate._paired import overlap_block, paired_differences
from chaosfm.evaluate._scoring import Window, higher_is_better, is_vpt, resolve_scores
from chaosfm.evaluate._splits import walk_forward
from chaosfm.forecasters import AbstractForecaster, Forecast

CLASSES = ("in_sample", "within_pretrain", "fresh")


class Protocol(BaseModel):
    """How windows are cut and scored. Every field is also a config key and a CLI flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(5, ge=1, description="steps forecast from each origin")
    num_samples: int = Field(100, ge=1, description="sample paths per forecast")
    context_length: int | None = Field(
        512, ge=1, description="rows of history handed to forecast(); None passes all of it"
    )
    min_context: int = Field(64, ge=2, description="first origin: rows of history needed")
    step: int | None = Field(None, ge=1, description="rows between origins; default: horizon")
    embargo: int = Field(5, ge=0, description="observations after training data that are not fresh")
    metrics: tuple[str, ...] | None = Field(None, description="scores; default depends on the kind")
    season: int = Field(1, ge=1, description="MASE's seasonal lag")
    quantile_levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    lyapunov_exponent: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="largest Lyapunov exponent per unit time, for VPT; default: the frame's "
        "attrs['lyapunov_exponent'] (a built-in system's, a file's metadata)",
    )
    dt: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="time per row for VPT; default: attrs['dt'], else the timestamps' even spacing",
    )
    vpt_threshold: float = Field(0.4, gt=0)
    max_windows: int | None = Field(
        None, ge=1, description="score at most this many origins per asset, evenly spaced"
    )
    score_in_sample: bool = Field(
        True, description="score the windows a forecaster trained on; false skips them (faster when only "
        "fresh and within-pretrain scores matter)",
    )
    n_bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0

    def window_origins(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The windows :func:`evaluate` cuts from ``frame``, before any model is fitted: one row per
        window, its ``asset`` and ``origin`` (the timestamp of its first target row)."""
        rows = [(asset, part["timestamp"].iloc[origin]) for _, asset, part, origin in _windows(frame, self)]
        return pd.DataFrame(rows, columns=["asset", "origin"])

    def forecast_bytes(self, channels: int) -> int:
        """Memory one window's forecast needs at its peak: the ``(num_samples, horizon, channels)``
        float64 samples and the working copies that drawing and scoring them make."""
        return FORECAST_COPIES * 8 * self.num_samples * self.horizon * channels


FORECAST_COPIES = 12
"""Arrays the size of a window's samples alive at once (the draws, their cumulative sum, the
samples, the sorted copy CRPS takes, the quantiles' and the forecast table's working copies): the
default market baselines at 2,000,000 samples peaked near 11 above the interpreter's own memory."""


@dataclass
class Example:
    """One window kept for plots: the history tail, the truth and the forecast."""

    model: str
    asset: str
    window_class: str
    history: pd.DataFrame
    truth: pd.DataFrame
    forecast: Forecast


@dataclass
class Results:
    """Per-window scores of every forecaster, and their summaries per class."""

    dataset: str
    kind: str
    protocol: Protocol
    scores: pd.DataFrame
    metric_names: list[str]
    models: list[str]
    cutoff: Any = None
    n_embargoed: dict[str, int] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    reference: str | None = None
    """The model every other is compared with, window for window, in :meth:`paired` and
    ``to_dict()["paired"]``; None compares nothing."""
    forecasts: pd.DataFrame | None = None
    """With ``evaluate(..., keep_forecasts=True)``: one row per (model, asset, origin, step,
    column), see :class:`ForecastTable`; else None."""

    def summary(self) -> dict[str, Any]:
        """``{MODEL: {class: {METRIC: mean, "n_windows": n}, "leakage_gap": {...}}}``."""
        return {model: self._model_summary(model) for model in self.models}

    def _model_summary(self, model: str) -> dict[str, Any]:
        rows = self.scores[self.scores["model"] == model]
        out: dict[str, Any] = {}
        for window_class in CLASSES:
            part = rows[rows["window_class"] == window_class]
            entry: dict[str, Any] = {}
            for metric in self.metric_names:
                values = part[metric].to_numpy(dtype=np.float64)
                values = values[np.isfinite(values)]
                entry[metric] = float(values.mean()) if values.size else None
            entry["n_windows"] = int(len(part))
            out[window_class] = entry
        out["leakage_gap"] = {
            metric: self._gap(rows, metric, index) for index, metric in enumerate(self.metric_names)
        }
        out["n_embargoed"] = int(self.n_embargoed.get(model, 0))
        return out

    def compared(self, window_class: str = "fresh", asset: str | None = None) -> dict[str, Any]:
        """Each score's mean per model over the windows of ``window_class`` every model scored.

        Models without a window of the class take no part (their means are None). A score's mean
        is over the shared windows where every model's value of it is finite, so the means are
        paired, window for window. ``asset`` keeps that asset's windows only (None: every asset's).

        Returns:
            ``{"n_windows": shared windows, "windows": {MODEL: its own windows of the class},
            "models": {MODEL: {METRIC: mean}}}``; ``windows`` differing from ``n_windows`` says
            which models scored windows the others did not.
        """
        part = self._rows(asset)
        part = part[part["window_class"] == window_class]
        own = {model: int((part["model"] == model).sum()) for model in self.models}
        present = [model for model in self.models if own[model]]
        shared = part.groupby(["asset", "origin"]).size() == len(present)  # a model scores a window once
        means: dict[str, dict[str, float | None]] = {model: {} for model in self.models}
        for metric in self.metric_names:
            # (window, model); a window some model did not score, or scored NaN, is dropped whole
            table = part.pivot(index=["asset", "origin"], columns="model", values=metric).reindex(columns=present)
            table = table.astype(np.float64).replace([np.inf, -np.inf], np.nan).dropna()
            for model in self.models:
                means[model][metric] = float(table[model].mean()) if model in present and len(table) else None
        return {"n_windows": int(shared.sum()), "windows": own, "models": means}

    def _rows(self, asset: str | None) -> pd.DataFrame:
        return self.scores if asset is None else self.scores[self.scores["asset"] == asset]

    def paired(self, window_class: str = "fresh", asset: str | None = None) -> dict[str, Any]:
        """Every model minus :attr:`reference`, per score, on the windows of ``window_class`` both
        scored, with a block-bootstrap interval (:func:`paired_differences`); ``asset`` keeps that
        asset's windows only.

        Returns:
            ``{"reference", "block", "models": {MODEL: {METRIC: {"value", "ci_low", "ci_high",
            "n_windows"}}}}``; ``models`` is empty without a reference or when it scored no window.
        """
        block = overlap_block(self.protocol.horizon, self.protocol.step or self.protocol.horizon)
        models = {} if self.reference is None else paired_differences(
            self._rows(asset), self.models, self.reference, self.metric_names, window_class=window_class,
            block=block, n_resamples=self.protocol.n_bootstrap, confidence=self.protocol.confidence,
            seed=self.protocol.seed,
        )
        return {"reference": self.reference, "block": block, "models": models}

    def _gap(self, rows: pd.DataFrame, metric: str, index: int) -> dict[str, float | None]:
        fresh = rows.loc[rows["window_class"] == "fresh", metric].to_numpy(dtype=np.float64)
        within = rows.loc[rows["window_class"] == "within_pretrain", metric].to_numpy(
            dtype=np.float64
        )
        fresh, within = fresh[np.isfinite(fresh)], within[np.isfinite(within)]
        if fresh.size < 2 or within.size < 2:
            return no_interval()
        return bootstrap_interval(
            (fresh, within), mean_difference, n_resamples=self.protocol.n_bootstrap,
            confidence=self.protocol.confidence, seed=[self.protocol.seed, index],
        )

    def to_dict(self) -> dict[str, Any]:
        """The dataset entry of ``metrics.json``."""
        return {
            "cutoff": cutoff_to_json(self.cutoff),
            "embargo": self.protocol.embargo,
            "horizon": self.protocol.horizon,
            "num_samples": self.protocol.num_samples,
            "higher_is_better": sorted(m for m in self.metric_names if higher_is_better(m)),
            "models": self.summary(),
            "compared": {window_class: self.compared(window_class) for window_class in CLASSES},
            "paired": {"fresh": self.paired("fresh")},
            **({"assets": {
                str(asset): {"compared": {"fresh": self.compared("fresh", asset)}, "paired": {"fresh": self.paired("fresh", asset)}}
                for asset in pd.unique(self.scores["asset"])
            }} if self.scores["asset"].nunique() > 1 else {}),
        }


def cutoff_to_json(cutoff: Any) -> Any:
    """A cutoff as ``metrics.json`` writes it: ISO text for dates, a number for trajectories; a
    per-asset cutoff as a mapping."""
    if isinstance(cutoff, dict):
        return {str(k): cutoff_to_json(v) for k, v in cutoff.items()}
    return cutoff.isoformat() if isinstance(cutoff, pd.Timestamp) else cutoff


def classify_window(
    first_target: Any,
    asset: str,
    rows_after_seen: int,
    own: Mapping[str, Any] | None,
    upstream: Sequence[Mapping[str, Any] | None],
    embargo: int,
) -> str:
    """The class of a window whose first target is at ``first_target``.

    Args:
        first_target: timestamp of the window's first target row.
        asset: the window's asset.
        rows_after_seen: rows of this asset strictly after the last timestamp anything saw and
            strictly before ``first_target``.
        own: the scorer's ``trained_through``.
        upstream: ``trained_through`` of every upstream artifact.
        embargo: observations after training data that are not yet fresh.

    Returns:
        ``"in_sample"``, ``"within_pretrain"``, ``"fresh"`` or ``"embargoed"``.
    """
    own_last = (own or {}).get(asset)
    upstream_last = latest_seen(upstream, asset)
    if own_last is not None and first_target <= own_last:
        return "in_sample"
    if upstream_last is not None and first_target <= upstream_last:
        return "within_pretrain"
    if own_last is None and upstream_last is None:
        return "fresh"
    return "fresh" if rows_after_seen >= embargo else "embargoed"


def _last_seen(own: Mapping[str, Any] | None, upstream: Sequence[Any], asset: str) -> Any:
    seen = [s for s in ((own or {}).get(asset), latest_seen(upstream, asset)) if s is not None]
    return max(seen) if seen else None


def window_class_at(
    stamps: Any,
    first_target: Any,
    asset: str,
    own: Mapping[str, Any] | None,
    upstream: Sequence[Mapping[str, Any] | None],
    embargo: int,
) -> str:
    """:func:`classify_window` of a window of ``asset`` whose rows are ``stamps``.

    The one place that counts the rows between what was seen and a window: the rows of ``stamps``
    (the asset's sorted timestamps) strictly after the last timestamp the scorer or anything
    upstream saw of ``asset``, and strictly before ``first_target``.
    """
    seen = _last_seen(own, upstream, asset)
    values = np.asarray(stamps)
    if seen is None:
        after = 0
    else:
        seen, first = np.asarray(seen, dtype=values.dtype), np.asarray(first_target, dtype=values.dtype)
        after = int(np.searchsorted(values, first, "left") - np.searchsorted(values, seen, "right"))
    return classify_window(first_target, asset, max(after, 0), own, upstream, embargo)


def evaluate(
    forecasters: Sequence[AbstractForecaster] | Mapping[str, AbstractForecaster],
    frame: pd.DataFrame,
    protocol: Protocol | None = None,
    *,
    cutoff: Any = None,
    keep_forecasts: bool = False,
) -> Results:
    """Score fitted forecasters on every walk-forward window of ``frame``.

    Args:
        forecasters: fitted forecasters (a mapping gives them display names).
        frame: a validated frame; windows are cut from every asset.
        protocol: windows and scores (defaults: ``Protocol()``).
        cutoff: the fitting cutoff, recorded in the results for the reader; classification uses
            the forecasters' ``trained_through`` only.
        keep_forecasts: also keep every scored forecast in ``Results.forecasts`` (quantiles at
            ``protocol.quantile_levels``); off by default, so callers that only need scores pay
            nothing for it.

    Returns:
        Results with one row per (model, window) in ``scores``.
    """
    protocol = protocol or Protocol()
    named = dict(forecasters) if isinstance(forecasters, Mapping) else {
        f.name: f for f in forecasters
    }
    if not named:
        raise ValueError("evaluate needs at least one forecaster")
    for name, forecaster in named.items():
        if forecaster.trained_through is None:
            raise ValueError(f"forecaster {name!r} is not fitted: call fit(train_frame) first")
    kind = frame_kind(frame)
    columns = target_columns(frame)
    scores = resolve_scores(protocol.metrics, kind, columns)
    lyapunov, dt = vpt_clock(frame, protocol) if any(map(is_vpt, scores)) else (None, 1.0)
    root = jax.random.key(protocol.seed)
    rows: list[dict[str, Any]] = []
    embargoed = {name: 0 for name in named}
    examples: dict[str, Example] = {}
    kept = ForecastTable(protocol.quantile_levels) if keep_forecasts else None
    plan = list(_windows(frame, protocol))
    # Every model makes its first forecast in the first window: the jitted ones compile there.
    first = "compiling (first forecast of each model)..."
    for asset_index, asset, part, origin in progress(plan, "evaluating windows", first=first):
        values = part[columns].to_numpy(dtype=np.float64)
        stamps = part["timestamp"].to_numpy()
        start = 0 if protocol.context_length is None else max(0, origin - protocol.context_length)
        context = part.iloc[start:origin]
        observed = values[origin : origin + protocol.horizon]
        history = values[:origin]
        first_target = part["timestamp"].iloc[origin]
        key = jax.random.fold_in(jax.random.fold_in(root, asset_index), origin)
        for name, forecaster in named.items():
            window_class = window_class_at(stamps, first_target, asset, forecaster.trained_through,
                                           forecaster.upstream_trained_through(), protocol.embargo)
            if window_class == "embargoed":
                embargoed[name] += 1
                continue
            if window_class == "in_sample" and not protocol.score_in_sample:
                continue
            forecast = forecaster.forecast(
                part.iloc[:origin] if forecaster.reads_all_history else context,
                protocol.horizon, protocol.num_samples, key=key,
            )
            _check_forecast(forecast, name, protocol, len(columns))
            window = Window(
                forecast=forecast,
                observed=observed,
                history=history,
                season=protocol.season,
                quantile_levels=protocol.quantile_levels,
                lyapunov_exponent=lyapunov,
                dt=dt,
                vpt_threshold=protocol.vpt_threshold,
            )
            row = {
                "model": name,
                "asset": asset,
                "origin": first_target,
                "window_class": window_class,
            }
            row.update({metric: fn(window) for metric, fn in scores.items()})
            rows.append(row)
            if kept is not None:
                kept.add(
                    model=name, asset=asset, window_class=window_class, forecast=forecast,
                    observed=observed, timestamps=part["timestamp"].iloc[origin : origin + protocol.horizon],
                )
            if window_class == "fresh" and name not in examples:
                examples[name] = Example(
                    model=name, asset=asset, window_class=window_class,
                    history=part.iloc[max(0, origin - 5 * protocol.horizon) : origin],
                    truth=part.iloc[origin : origin + protocol.horizon],
                    forecast=Forecast(
                        forecast.samples, forecast.columns, asset=asset,
                        timestamps=part["timestamp"].iloc[origin : origin + protocol.horizon].tolist(),
                        point=forecast.point,
                    ),
                )
    table = pd.DataFrame(rows, columns=["model", "asset", "origin", "window_class", *scores])
    return Results(
        dataset=str(frame.attrs.get("name", "frame")),
        kind=kind,
        protocol=protocol,
        scores=table,
        metric_names=list(scores),
        models=list(named),
        cutoff=cutoff,
        n_embargoed=embargoed,
        examples=list(examples.values()),
        forecasts=None if kept is None else kept.frame(),
    )


def vpt_clock(frame: pd.DataFrame, protocol: Protocol) -> tuple[float | None, float]:
    """The largest Lyapunov exponent and the time per row that VPT uses on ``frame``.

    Each is the protocol's when set, else the frame's ``attrs`` (a built-in system's measured
    values, a file's metadata or sidecar); ``dt`` else the spacing of evenly spaced numeric
    timestamps (:func:`chaosfm.data.time_step`). Without an exponent VPT is NaN and ``dt`` is
    not needed (1.0 is returned).

    Raises:
        DataError: the exponent is known but ``dt`` is not, and the timestamps are dates or
            unevenly spaced.
    """
    lyapunov = protocol.lyapunov_exponent or frame.attrs.get("lyapunov_exponent")
    dt = protocol.dt or frame.attrs.get("dt")
    if lyapunov is None:
        return None, float(dt or 1.0)
    return float(lyapunov), (float(dt) if dt else time_step(frame))


def _windows(frame: pd.DataFrame, protocol: Protocol):
    """(asset index, asset, asset frame, origin row) for every scored origin."""
    step = protocol.step or protocol.horizon
    for asset_index, (asset, part) in enumerate(split_assets(frame).items()):
        n_obs = len(part)
        if n_obs < protocol.min_context + protocol.horizon:
            continue
        origins = [
            int(test[0])
            for _, test in walk_forward(
                n_obs, protocol.horizon, step=step, min_train_size=protocol.min_context
            )
        ]
        if protocol.max_windows is not None and len(origins) > protocol.max_windows:
            keep = np.linspace(0, len(origins) - 1, protocol.max_windows).round().astype(int)
            origins = [origins[i] for i in np.unique(keep)]
        for origin in origins:
            yield asset_index, asset, part, origin


def _check_forecast(forecast: Forecast, name: str, protocol: Protocol, channels: int) -> None:
    expected = (protocol.num_samples, protocol.horizon, channels)
    if forecast.samples.shape != expected:
        raise ValueError(
            f"forecaster {name!r} returned samples of shape {forecast.samples.shape}, "
            f"expected {expected} (samples, horizon, channels)"
        )
    if not np.isfinite(forecast.samples).all():
        raise ValueError(f"forecaster {name!r} returned non-finite samples")


def fit_through(
    forecasters: Mapping[str, AbstractForecaster], frame: pd.DataFrame, cutoff: Any, embargo: int = 0
) -> pd.DataFrame:
    """Fit every forecaster on the rows at or before ``cutoff`` (one timestamp or one per asset,
    through a :class:`~chaosfm.data.TimeFence`); return those rows."""
    fence = TimeFence(cutoff, embargo)
    train = fence.train(frame)
    if len(train) == 0:
        raise ValueError(f"no rows at or before the cutoff {cutoff!s}: nothing to fit on")
    train.attrs = dict(frame.attrs)
    for forecaster in progress(list(forecasters.values()), "fitting"):
        fence.check(train, f"{forecaster.name}.fit")
        forecaster.fit(train)
    return train
