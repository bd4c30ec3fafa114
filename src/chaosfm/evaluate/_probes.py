"""Heads on a frozen pretrained JEPA: a ridge probe, and a forecaster that the evaluator scores.

* :func:`probe_study`: ridge regressions (scikit-learn) from frozen context embeddings to the
  next-``horizon`` log return and realized volatility, fitted on windows up to the probe's cutoff,
  scored by R² per window class (``in_sample``, ``within_pretrain``, ``fresh``, decided by
  :func:`~chaosfm.evaluate.classify_window` from the ``trained_through`` records), with a
  bootstrap confidence interval of the gap ``fresh - within_pretrain``.
* :class:`JEPAForecaster`: without a flow head, a ridge readout of the context embedding gives
  the mean of the next ``horizon`` log returns and Gaussian residuals give the spread; with one,
  the flow samples ``num_samples`` future embeddings (``cfm_horizon`` steps ahead), the readout
  maps each to a mean return path, and Gaussian noise is added, sized so the total variance
  matches the error of the sample mean on training windows. Paths are rebuilt into closes.
* ``crps_pct``, CRPS of the close in percent of the last close, registered beside CRPS so windows
  at different price levels (and assets) average fairly.
* ``long_short_return``, a window score registered beside CRPS: hold ``sign(forecast median
  close at the horizon - last close)`` for the window and earn that times the realized log return.
  With ``step = horizon`` windows do not overlap, so their Sharpe ratio is the rule's.

Dimension letters: N windows, E embedding width, H horizon, S samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from chaosfm.data import DataError, TrainedThrough, frame_kind, trained_through
from chaosfm.data._fence import latest
from chaosfm.evaluate._forecast import AbstractForecaster, Forecast, numpy_rng, require_key
from chaosfm.evaluate._protocol import classify_window
from chaosfm.evaluate._scoring import HIGHER_IS_BETTER, SCORES, Window
from chaosfm.train import embed_windows, load_pretrained

__all__ = ["JEPAForecaster", "long_short_return", "probe_study", "probe_windows", "relative_crps"]

_RETURN = 0  # index of symlog_return in chaosfm.train.FEATURES


def _log_returns(values: np.ndarray) -> np.ndarray:
    """Invert the ``symlog(100 * r)`` feature back to log returns ``r``."""
    x = values[:, _RETURN]
    return np.sign(x) * np.expm1(np.abs(x)) / 100.0


def long_short_return(window: Window) -> float:
    """Per-window return of the long/short rule (see the module docstring)."""
    last = float(window.history[-1, 0])
    position = np.sign(float(window.forecast.median()[-1, 0]) - last)
    return float(position * np.log(float(window.observed[-1, 0]) / last))


def relative_crps(window: Window) -> float:
    """CRPS of the close in percent of the last close: comparable across price levels and assets."""
    from chaosfm.evaluate._metrics import crps

    last = float(window.history[-1, 0])
    return float(100.0 * np.mean(crps(window.forecast.samples, window.observed)) / last)


SCORES.setdefault("long_short_return", long_short_return)
SCORES.setdefault("crps_pct", relative_crps)
HIGHER_IS_BETTER.add("long_short_return")


@eqx.filter_jit
def _sample_future(model: Any, embedding: jax.Array, num_samples: int, key: jax.Array) -> jax.Array:
    return model.sample_future(embedding, num_samples, key=key)


@eqx.filter_jit
def _sample_many(model: Any, embeddings: jax.Array, num_samples: int, keys: jax.Array) -> jax.Array:
    return jax.vmap(lambda e, k: model.sample_future(e, num_samples, key=k))(embeddings, keys)


class JEPAForecaster(AbstractForecaster):
    """Forecasts closes from a frozen pretrained JEPA (``chaosfm pretrain`` run) and ridge readouts.

    Args:
        run_dir: the pretrain run folder.
        horizon: longest horizon the readout is fitted for.
        alpha: ridge penalty of the readout.
        name: display name (default ``<kind>:<folder>``).
        seed: key of the flow draws that calibrate the residual noise in ``fit``.
    """

    kinds = ("market",)

    def __init__(
        self, run_dir: str | Path, *, horizon: int = 5, alpha: float = 1.0, name: str | None = None, seed: int = 0
    ):
        root = Path(run_dir)
        self.run_dir, self.columns = root, ["close"]
        self.model, self.inputs, meta = load_pretrained(root)
        self.encoder_trained_through: TrainedThrough = meta["trained_through"] or {}
        # A code-reading encoder's tokenizer is upstream of it too.
        self.tokenizer_trained_through: TrainedThrough = meta["upstream_trained_through"] or {}
        self.vol_window = self.inputs.vol_window
        self.horizon, self.alpha, self.seed = int(horizon), float(alpha), int(seed)
        self.name = name or f"{self.model.kind}:{root.name}"
        self.readout: Ridge | None = None
        self.residual_std: np.ndarray | None = None

    @property
    def window(self) -> int:
        return self.model.config.context_length

    def upstream_trained_through(self) -> list[TrainedThrough]:
        return [self.encoder_trained_through] + ([self.tokenizer_trained_through] if self.tokenizer_trained_through else [])

    def min_context(self) -> int:
        """Rows of history a forecast needs: the feature warm-up and one encoder window."""
        return self.window + self.vol_window + 1

    def fit(self, frame: pd.DataFrame) -> "JEPAForecaster":
        """Fit the readout on every window of ``frame`` whose next ``horizon`` returns it holds."""
        if frame_kind(frame) != "market":
            raise ValueError("JEPAForecaster supports market frames only")
        lead = self.model.config.cfm_horizon if self.model.flow is not None else 0
        inputs, contexts, targets = [], [], []
        for stream in self.inputs.streams(frame).values():
            returns = _log_returns(stream.features)
            ends = np.arange(self.window - 1, len(returns) - max(self.horizon, lead))
            if ends.size == 0:
                continue
            contexts.append(embed_windows(self.model.encoder, stream.inputs, ends, self.window))
            if self.model.flow is not None:
                inputs.append(embed_windows(self.model.target_encoder, stream.inputs, ends + lead, self.window))
            targets.append(returns[ends[:, None] + 1 + np.arange(self.horizon)[None, :]])
        if not contexts:
            raise DataError(f"{self.name}.fit: no asset holds {self.window + self.horizon} rows after warm-up")
        context, y = np.concatenate(contexts), np.concatenate(targets)
        x = np.concatenate(inputs) if inputs else context
        self.readout = Ridge(alpha=self.alpha).fit(x, y)
        self.residual_std = (y - self.readout.predict(x)).std(axis=0, ddof=1)
        if self.model.flow is not None:
            self.residual_std = self._calibrated_noise(context, y)
        self.trained_through = trained_through(frame)
        return self

    def _calibrated_noise(self, context: np.ndarray, y: np.ndarray, windows: int = 256, draws: int = 16) -> np.ndarray:
        """Residual std that makes the forecast's total variance match the error of its mean.

        The spread of read-out flow samples already carries part of the uncertainty; adding the
        readout's full residual on top would count it twice. On up to ``windows`` training
        windows: ``noise² = max(MSE(y, sample mean) - mean sample variance, 0)`` per step (the
        law of total variance), floored at 5% of the MSE so the forecast never collapses.
        """
        index = np.unique(np.linspace(0, len(context) - 1, min(windows, len(context))).round().astype(int))
        keys = jax.random.split(jax.random.key(self.seed), index.size)
        futures = np.asarray(_sample_many(self.model, jax.numpy.asarray(context[index]), draws, keys))
        means = self.readout.predict(futures.reshape(-1, futures.shape[-1])).reshape(index.size, draws, -1)
        mse = np.mean((y[index] - means.mean(axis=1)) ** 2, axis=0)
        spread = np.mean(means.var(axis=1, ddof=1), axis=0)
        return np.sqrt(np.maximum(mse - spread, 0.05 * mse))

    def forecast(self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None) -> Forecast:
        require_key(key, f"{self.name}.forecast")
        if self.readout is None:
            raise ValueError(f"{self.name}: call fit(train_frame) before forecast")
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"{self.name}: horizon must lie in 1..{self.horizon} (the readout's), got {horizon}")
        (stream,) = self.inputs.streams(context).values()
        if len(stream.inputs) == 0:
            raise DataError(
                f"{self.name}: a forecast needs more than {self.vol_window} rows of context (the feature "
                f"warm-up), {self.min_context()} for a full encoder window; got {len(context)}",
                rule="context length",
            )
        # A short history (the first origins) is read as it is: the encoder is causal, any length works.
        window = min(self.window, len(stream.inputs))
        embedding = embed_windows(self.model.encoder, stream.inputs[-window:], np.array([window - 1]), window, chunk=1)[0]
        flow_key, noise_key = jax.random.split(key)
        if self.model.flow is not None:
            futures = np.asarray(_sample_future(self.model, jax.numpy.asarray(embedding), num_samples, flow_key))
            means = self.readout.predict(futures)
        else:
            means = np.broadcast_to(self.readout.predict(embedding[None, :]), (num_samples, self.horizon))
        rng = numpy_rng(noise_key)
        returns = means + rng.standard_normal(means.shape) * self.residual_std[None, :]
        last_close = float(context["close"].iloc[-1])
        paths = last_close * np.exp(np.cumsum(returns[:, :horizon], axis=1))
        asset = str(context["asset"].iloc[0]) if "asset" in context.columns else None
        return Forecast(paths, ["close"], asset=asset)


def probe_windows(model: Any, inputs: Any, frame: pd.DataFrame, *, horizon: int, step: int) -> pd.DataFrame:
    """One row per origin (every ``step`` rows): asset, origin row, first and last target
    timestamps, the embedding and the two probe targets (next-horizon log return, realized vol)."""
    window = model.config.context_length
    rows = []
    for asset, stream in inputs.streams(frame).items():
        returns, stamps = _log_returns(stream.features), stream.stamps
        ends = np.arange(window - 1, len(returns) - horizon, step)
        if ends.size == 0:
            continue
        embeddings = embed_windows(model.encoder, stream.inputs, ends, window)
        future = returns[ends[:, None] + 1 + np.arange(horizon)[None, :]]
        for i, end in enumerate(ends):
            rows.append(
                {
                    "asset": asset,
                    "end": int(end),
                    "first_target": stamps.iloc[end + 1],
                    "last_target": stamps.iloc[end + horizon],
                    "embedding": embeddings[i],
                    "next_return": float(future[i].sum()),
                    "realized_vol": float(np.sqrt(np.mean(future[i] ** 2))),
                }
            )
    return pd.DataFrame(rows)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = np.sum((y - y.mean()) ** 2)
    return float(1.0 - np.sum((y - pred) ** 2) / total) if total > 0 else float("nan")


def probe_study(
    run_dir: str | Path,
    frame: pd.DataFrame,
    probe_cutoff: Any,
    *,
    horizon: int = 5,
    step: int = 5,
    embargo: int = 5,
    alpha: float = 1.0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Ridge probes of a frozen encoder, scored per window class.

    Args:
        run_dir: the pretrain run (its ``trained_through`` is the upstream record).
        frame: every row to cut windows from (assets as in the run).
        probe_cutoff: last timestamp the probes fit on; one value or a mapping per asset. A window
            is a training window when all its targets are at or before it.
        horizon, step, embargo: windows and the embargo, as in :class:`~chaosfm.evaluate.Protocol`.
        alpha: ridge penalty.

    Returns:
        ``{target: {class: {"r2", "n_windows"}, "leakage_gap": {"value", "ci_low", "ci_high"}}}``
        for ``next_return`` and ``realized_vol``.
    """
    model, inputs, meta = load_pretrained(run_dir)
    windows = probe_windows(model, inputs, frame, horizon=horizon, step=step)
    if windows.empty:
        raise DataError("probe_study: no window fits in the frame", rule="context length")
    upstream = [meta["trained_through"] or {}, meta["upstream_trained_through"] or {}]
    stamps = {a: p["timestamp"].to_numpy() for a, p in frame.groupby("asset", sort=False)}
    cut = probe_cutoff if isinstance(probe_cutoff, dict) else {a: probe_cutoff for a in stamps}
    last_target = {}
    for asset, part in frame.groupby("asset", sort=False):
        before = part.loc[part["timestamp"] <= pd.Timestamp(cut[str(asset)]), "timestamp"]
        last_target[str(asset)] = before.iloc[-1] if len(before) else None
    classes, train_mask = [], []
    for row in windows.itertuples(index=False):
        own_last = last_target[row.asset]
        seen = max(s for s in (own_last, latest(upstream, row.asset)) if s is not None)
        asset_stamps = stamps[row.asset]
        after = int(np.sum((asset_stamps > seen) & (asset_stamps < np.datetime64(row.first_target))))
        own = {row.asset: own_last} if own_last is not None else {}
        classes.append(classify_window(row.first_target, row.asset, after, own, upstream, embargo))
        # The probe trains on windows whose every target is at or before its cutoff.
        train_mask.append(own_last is not None and row.last_target <= own_last)
    windows["window_class"] = classes
    x = np.stack(windows["embedding"].to_numpy())
    fit_rows = np.asarray(train_mask, dtype=bool)
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for target in ("next_return", "realized_vol"):
        y = windows[target].to_numpy()
        probe = Ridge(alpha=alpha).fit(x[fit_rows], y[fit_rows])
        pred = probe.predict(x)
        entry: dict[str, Any] = {}
        for window_class in ("in_sample", "within_pretrain", "fresh"):
            rows = windows["window_class"].to_numpy() == window_class
            entry[window_class] = {
                "r2": _r2(y[rows], pred[rows]) if rows.sum() >= 2 else None,
                "n_windows": int(rows.sum()),
            }
        entry["leakage_gap"] = _r2_gap(y, pred, windows["window_class"].to_numpy(), rng, n_bootstrap, confidence)
        out[target] = entry
    return out


def _r2_gap(y, pred, classes, rng, n_bootstrap, confidence) -> dict[str, float | None]:
    fresh, within = np.flatnonzero(classes == "fresh"), np.flatnonzero(classes == "within_pretrain")
    if fresh.size < 3 or within.size < 3:
        return {"value": None, "ci_low": None, "ci_high": None}
    value = _r2(y[fresh], pred[fresh]) - _r2(y[within], pred[within])
    draws = []
    for _ in range(n_bootstrap):
        f, w = rng.choice(fresh, fresh.size), rng.choice(within, within.size)
        draws.append(_r2(y[f], pred[f]) - _r2(y[w], pred[w]))
    low, high = np.nanquantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}
