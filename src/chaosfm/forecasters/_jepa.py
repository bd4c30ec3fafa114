"""Heads on a frozen pretrained JEPA: the forecaster the evaluator scores, and the probes' windows.

* :class:`JEPAForecaster`: without a flow head, a ridge readout of the context embedding gives
  the mean of the next ``horizon`` log returns and Gaussian residuals give the spread; with one,
  the flow samples ``num_samples`` future embeddings (``cfm_horizon`` steps ahead), the readout
  maps each to a mean return path, and Gaussian noise is added, sized so the total variance
  matches the error of the sample mean on training windows. Paths are rebuilt into closes.
* :func:`probe_windows`: one row per origin with its frozen embedding and the two probe targets
  (next-``horizon`` log return, realized volatility); :func:`chaosfm.evaluate.probe_scores` fits
  and scores the ridge probes on them per window class.

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

from chaosfm._random import numpy_rng
from chaosfm.data import DataError, TrainedThrough, frame_kind, trained_through
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.train import embed_windows, load_pretrained

__all__ = ["JEPAForecaster", "probe_windows"]

_RETURN = 0  # index of symlog_return in chaosfm.train.FEATURES


def _log_returns(values: np.ndarray) -> np.ndarray:
    """Invert the ``symlog(100 * r)`` feature back to log returns ``r``."""
    x = values[:, _RETURN]
    return np.sign(x) * np.expm1(np.abs(x)) / 100.0


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

    @classmethod
    def load(cls, run_dir: str | Path, **options: Any) -> "JEPAForecaster":
        """The forecaster of a ``chaosfm pretrain`` run folder (hashes checked); ``options``:
        ``horizon``, ``alpha``, ``name``, ``seed``. Its readout is fitted by :meth:`fit`."""
        return cls(run_dir, **options)

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
