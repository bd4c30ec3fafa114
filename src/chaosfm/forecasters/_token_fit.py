"""Code-model forecasters that train their tokenizer and model in ``fit``: ``token_mamba``, ``token_gpt``.

:class:`TokenMambaForecaster` and :class:`TokenGPTForecaster` are what ``chaosfm train`` and
:class:`~chaosfm.forecasters.TokenForecaster` do over a run folder, done in memory on the frame
``fit`` is given, so ``chaosfm bench chaos`` scores a token model beside the other forecasters.
``fit(frame)``:

1. fits quantile bins (:class:`~chaosfm.tokenizers.BinTokenizer`, ``vocab_size - 2`` bins per
   channel) on the frame's channels ``x0..xk``, each asset's whole series one context: the
   quantiles are those of the values as its code stream is scaled (by the mean-abs of its rows);
2. encodes every asset as one code stream, channels interleaved row by row (``C`` codes a row);
3. trains a small Mamba-2 or GPT on windows of ``context_rows * C + 1`` codes with the one
   training loop (:func:`chaosfm.train.fit_code_model`) in a scratch folder that is removed
   afterwards; the model and the tokenizer stay in memory.

``forecast`` is the decode path of :class:`~chaosfm.forecasters.TokenForecaster`
(:func:`~chaosfm.forecasters._token.sample_forecast`): the last ``context_rows`` rows of the
context as the prompt, scaled by the context's own mean-abs; ``S`` code paths from
:func:`chaosfm.models.generate`; decoded back at that scale. With ``point="greedy"`` path 0 is
the greedy (argmax) path and the point forecast, paths ``1..S-1`` are sampled at
``temperature``; with ``point="median"`` every path is sampled and the point forecast is their
median.

The defaults were chosen on the training rows of Lorenz-63 only (seed 0, the first 8,000 of
10,000 rows; never a test trajectory): fitted on the first 6,400 rows, scored by the mean valid
time (threshold 0.4, in Lyapunov times) of the point forecasts from 12 origins in the last 1,600
rows (3,000-row contexts, as ``chaosfm bench chaos`` gives; 662-row horizons, 12 Lyapunov times),
for about a minute of training on the 2 shared CPU cores of the development machine:

- the setting of ``configs/lorenz-mamba.yaml`` (130 codes, 32 rows, 600 steps at 3e-3) held 0.10
  Lyapunov times with the median of 16 samples and 0.17 with the greedy path; longer contexts
  in the same time (128 rows, 170 steps; 256 rows, 80 steps) held less (0.13 and 0.06 greedy):
  the model was undertrained, not short of context (a fully observed flow needs few rows);
- the learning rate mattered most: 2e-2 took the same Mamba to 1.18 (greedy);
- coarser bins are learnt faster: 66 codes held 1.42 and 1.73 (seeds 0, 1), 34 codes 1.68,
  1.61 and 1.30 (seeds 0-2), 258 codes almost nothing (0.06 at 1e-2); 64 rows and 300 steps
  with 66 codes held 1.97, 1.37 and 1.59, the same within the spread over seeds, but 34 codes
  fail less often (no origin under 12 valid steps, against 0 to 6 for several with 66);
- the greedy path is the better point forecast: 1.97 against 0.37 for the median of 16 paths
  sampled at temperature 1 (1.30 at 0.5); with 34 codes 1.30 against 0.80;
- the GPT is cheaper per step at 32 rows but learns more slowly: 1,500 steps at 1e-2 held 1.56
  and 0.71 (seeds 0, 1) with 34 codes, 0.91 with 66; 64 rows cost twice the minute for 0.22.

Dimension letters: S samples, H horizon rows, C channels.
"""

from __future__ import annotations

import abc
import functools
import tempfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chaosfm.forecasters._base import AbstractForecaster, Forecast
from chaosfm.forecasters._baselines import _begin_fit, _series_by_asset
from chaosfm.forecasters._token import sample_forecast
from chaosfm.tokenizers import BinTokenizer
from chaosfm.train import CodeData, TrainRunConfig, fit_code_model, parse_train_run_config

__all__ = ["CodeModelSettings", "TokenGPTForecaster", "TokenMambaForecaster"]


class CodeModelSettings(BaseModel):
    """Tokenizer, model, training and decoding settings of the ``token_*`` forecasters.

    ``steps`` and ``learning_rate`` have no default here: each forecaster's ``defaults`` gives
    them (the GPT learns more slowly per step, and its steps are cheaper).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(34, ge=3, description="codes of the quantile bins, PAD and EOS included: "
                                                  "vocab_size - 2 bins per channel")
    context_rows: int = Field(32, ge=1, description="rows the model reads: its training window and a "
                                                    "forecast's prompt, context_rows * C codes")
    d_model: int = Field(64, ge=1, description="residual stream width")
    n_layers: int = Field(2, ge=1, description="Mamba mixers or GPT blocks")
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="other fields of the model section (chaosfm.train.MambaSection or GPTSection: "
                    "d_state, head_dim, n_heads, ...)",
    )
    steps: int = Field(ge=1, description="optimiser updates")
    batch_size: int = Field(16, ge=1, description="windows per update")
    learning_rate: float = Field(gt=0, description="peak AdamW learning rate (cosine decay after warm-up)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up updates")
    seed: int = Field(0, description="initial weights and the windows drawn")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the sampled paths (0: greedy)")
    top_k: int | None = Field(None, ge=1, description="sample among the top_k most likely codes only")
    point: Literal["greedy", "median"] = Field(
        "greedy", description="'greedy': path 0 is the greedy path and the point forecast; 'median': every "
                              "path sampled, the point forecast their median",
    )


class AbstractCodeModelForecaster(AbstractForecaster):
    """Quantile bins and a code model, both fitted in :meth:`fit` (see the module).

    Args:
        **settings: fields of :class:`CodeModelSettings`, over the forecaster's ``defaults``.

    Attributes (after ``fit``):
        tokenizer: the fitted :class:`~chaosfm.tokenizers.BinTokenizer`.
        model: the trained code model.
        history_: the training loop's logged metrics.
    """

    kinds = ("trajectory",)
    defaults: ClassVar[Mapping[str, Any]]
    """Settings of this model kind that :class:`CodeModelSettings` leaves open."""

    def __init__(self, **settings: Any) -> None:
        try:
            self.settings = CodeModelSettings(**{**self.defaults, **settings})
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"{self.name} options: {problems}") from None
        self._run_config(channels=1)  # a bad model option fails now, before any data is read
        self.tokenizer: BinTokenizer | None = None
        self.model: Any = None
        self.history_: list[dict[str, float]] = []

    @property
    @abc.abstractmethod
    def model_kind(self) -> str:
        """The model section's ``kind`` (``"mamba"``, ``"gpt"``): a class attribute of each forecaster."""

    def _run_config(self, channels: int) -> TrainRunConfig:
        """The model and loop sections of a run over ``channels`` interleaved channels."""
        settings = self.settings
        model = {
            **settings.model_options, "kind": self.model_kind, "vocab_size": settings.vocab_size,
            "context_length": settings.context_rows * channels, "d_model": settings.d_model,
            "n_layers": settings.n_layers,
        }
        train = {
            "steps": settings.steps, "batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
            "warmup_steps": settings.warmup_steps, "checkpoint_every": settings.steps, "keep_checkpoints": 1,
            "log_every": max(1, settings.steps // 20), "seed": settings.seed,
        }
        # A ConfigError (a ValueError) names the key: model.<field> for a bad model_options entry.
        return parse_train_run_config({"model": model, "train": train}, f"{self.name} options")

    def fit(self, frame: pd.DataFrame) -> AbstractCodeModelForecaster:
        """Fit the bins and train the model on ``frame`` (every row a training row)."""
        settings = self.settings
        _, columns = _begin_fit(self, frame)
        longest = max(len(values) for values in _series_by_asset(frame, columns).values())
        if longest < settings.context_rows + 1:
            raise ValueError(
                f"{self.name}: context_rows={settings.context_rows} needs a series of at least "
                f"{settings.context_rows + 1} rows; the longest has {longest}"
            )
        tokenizer = BinTokenizer(
            kind="quantile", vocab_size=settings.vocab_size, context_length=max(longest, 2), columns=tuple(columns)
        ).fit(frame)
        streams = tokenizer.code_streams(frame, tokenizer.stream_scales(frame))
        data = CodeData(train={asset: codes for asset, (codes, _) in streams.items()}, vocab_size=tokenizer.vocab_size)
        with tempfile.TemporaryDirectory(prefix=f"chaosfm-{self.name}-") as scratch:
            result = fit_code_model(self._run_config(len(columns)), data, scratch)
        self.tokenizer, self.model, self.history_ = tokenizer, result.model, result.history
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``; with ``point="greedy"``, path 0 is the greedy path (the point forecast)."""
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.forecast was called before fit")
        settings = self.settings
        decode = functools.partial(
            sample_forecast, self.model, self.tokenizer, context, horizon, top_k=settings.top_k,
            context_codes=settings.context_rows * len(self.tokenizer.target_columns), who=f"{self.name}.forecast",
        )
        if settings.point == "median" or settings.temperature == 0:
            return decode(num_samples, temperature=settings.temperature, key=key)
        greedy = decode(1, temperature=0.0, key=None)
        paths = [greedy.samples]
        if num_samples > 1:
            paths.append(decode(num_samples - 1, temperature=settings.temperature, key=key).samples)
        return Forecast(np.concatenate(paths), greedy.columns, asset=greedy.asset, point=greedy.samples[0])


@final
class TokenMambaForecaster(AbstractCodeModelForecaster):
    """``token_mamba``: quantile bins and a Mamba-2 trained in ``fit`` (see the module): 600 steps
    at 2e-2 by default, about a minute on two CPU cores."""

    name = "token_mamba"
    model_kind = "mamba"
    defaults = MappingProxyType({"steps": 600, "learning_rate": 2e-2})


@final
class TokenGPTForecaster(AbstractCodeModelForecaster):
    """``token_gpt``: quantile bins and a GPT trained in ``fit`` (see the module): 1,500 steps at
    1e-2 by default (its steps over 96 codes cost a third of the Mamba's), about a minute on two
    CPU cores."""

    name = "token_gpt"
    model_kind = "gpt"
    defaults = MappingProxyType({"steps": 1500, "learning_rate": 1e-2})
