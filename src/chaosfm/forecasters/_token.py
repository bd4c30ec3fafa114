"""``TokenForecaster``: a trained code model (GPT or Mamba) and its tokenizer as a forecaster.

Dimension letters: S samples, H horizon steps, C channels, n generated codes.

A forecast asks the run's tokenizer for the prompt of the context (:meth:`context_input`: the
context's last codes and the state decoding needs), samples ``S`` code paths with
:func:`chaosfm.models.generate` (vmapped over keys), and hands them back to the tokenizer
(:meth:`forecast_output`), which decodes them into the original units: closes rebuilt from
decoded returns for candle tokenizers, channel values at the context's own scale for bins. The
forecaster never asks which kind of tokenizer it holds. :func:`sample_forecast` is that decode
path, shared with the forecasters that train their code model in ``fit``.

The forecaster does not fit: ``fit`` keeps the run's ``trained_through``, and
:meth:`upstream_trained_through` gives the tokenizer's, so the protocol tells in-sample,
within-pretrain and fresh windows apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.data import DataError, TrainedThrough
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.models import AbstractCodeModel, generate
from chaosfm.tokenizers import AbstractTokenizer
from chaosfm.train import exo_series, load_code_run

__all__ = ["TokenForecaster", "sample_forecast"]


class TokenForecaster(AbstractForecaster):
    """Forecasts by sampling code paths from a trained run (``chaosfm train`` or ``chaosfm stage``).

    Args:
        run_dir: the run folder (``model.eqx``, ``tokenizer/``, ``codes.json``, ``meta.json``).
        temperature: sampling temperature (0: greedy, every sample the same).
        top_k: sample among the ``top_k`` most likely codes only (None: all).
        context_codes: codes of the prompt (default: the model's ``context_length``).
    """

    kinds = ("market", "trajectory")

    def __init__(
        self,
        run_dir: str | Path,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        context_codes: int | None = None,
    ):
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        self.run = load_code_run(run_dir)
        self.model, self.meta, self.tokenizer = self.run.model, self.run.meta, self.run.tokenizer
        self.layout = self.run.layout
        self.run_dir = self.run.path
        self.name = f"{self.model.kind}:{self.run_dir.name}"
        self.temperature, self.top_k = float(temperature), top_k
        self.context_codes = int(context_codes or self.model.config.context_length)
        self.trained_through = self.run.trained_through
        self.columns = self.run.columns
        self.kinds = ("market",) if "close" in self.columns else ("trajectory",)

    @classmethod
    def load(cls, run_dir: str | Path, **options: Any) -> TokenForecaster:
        """The forecaster of a ``chaosfm train`` / ``chaosfm stage`` run folder (hashes checked);
        ``options``: ``temperature``, ``top_k``, ``context_codes``."""
        return cls(run_dir, **options)

    def fit(self, frame: pd.DataFrame) -> TokenForecaster:
        """Nothing to fit: the model was trained by ``chaosfm train``; keeps its ``trained_through``."""
        return self

    def upstream_trained_through(self) -> list[TrainedThrough]:
        return [self.tokenizer.trained_through] if self.tokenizer.trained_through else []

    def target_columns(self, frame: pd.DataFrame) -> list[str]:
        return list(self.columns)

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        return sample_forecast(
            self.model, self.tokenizer, context, horizon, num_samples, temperature=self.temperature,
            top_k=self.top_k, context_codes=self.context_codes, key=key, exo_statistics=self.layout["exo"],
            who=f"{self.name}.forecast",
        )


def sample_forecast(
    model: AbstractCodeModel,
    tokenizer: AbstractTokenizer,
    context: pd.DataFrame,
    horizon: int,
    num_samples: int,
    *,
    temperature: float,
    top_k: int | None,
    context_codes: int,
    key: Any,
    exo_statistics: dict[str, float] | None = None,
    who: str = "forecast",
) -> Forecast:
    """``S`` code paths sampled after the context's prompt, decoded into ``(S, H, C)`` sample paths.

    The one decode path of every code-model forecaster: the tokenizer's prompt of the context
    (:meth:`~chaosfm.tokenizers.AbstractTokenizer.context_input`, at most ``context_codes``
    codes), :func:`chaosfm.models.generate` vmapped over keys, the tokenizer's decoding
    (:meth:`~chaosfm.tokenizers.AbstractTokenizer.forecast_output`).

    Args:
        model: the trained code model.
        tokenizer: the fitted tokenizer its codes come from.
        context: one asset's rows up to the origin.
        horizon: rows to forecast (H).
        num_samples: paths to draw (S).
        temperature: sampling temperature; 0 is greedy (every path the same, ``key`` optional).
        top_k: sample among the ``top_k`` most likely codes only (None: all).
        context_codes: codes of the prompt.
        key: a JAX key; required when ``temperature > 0``.
        exo_statistics: the training rows' realized-volatility statistics (``codes.json``'s
            ``exo``), for a model with ``exo_clock``.
        who: names the caller in errors.
    """
    if temperature > 0:
        require_key(key, who)
    elif key is None:
        key = jax.random.key(0)
    if horizon < 1 or num_samples < 1:
        raise ValueError(f"horizon and num_samples must be >= 1, got {horizon}, {num_samples}")
    columns = list(tokenizer.target_columns)
    missing = [c for c in columns if c not in context.columns]
    if missing:
        raise DataError(f"{who}: the context lacks column(s) {missing}", rule="columns")
    asset = str(context["asset"].iloc[0]) if "asset" in context.columns else None
    prompt = tokenizer.context_input(context, context_codes)
    exo = None
    if model.uses_exo:
        exo = jnp.asarray(exo_series(prompt.rows, prompt.ends, columns, exo_statistics), jnp.float32)
    drawn = generate(
        model, jnp.asarray(prompt.codes, jnp.int32), tokenizer.horizon_codes(horizon),
        temperature, top_k, key=key, exo=exo, num_samples=num_samples,
    )
    samples = tokenizer.forecast_output(np.asarray(drawn), prompt.state, horizon)
    return Forecast(samples, columns, asset=asset)
