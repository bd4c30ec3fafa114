"""``TokenForecaster``: a trained code model (GPT or Mamba) and its tokenizer as a forecaster.

Dimension letters: S samples, H horizon steps, C channels, n generated codes, P candles per code.

A forecast encodes the context with the run's tokenizer, samples ``S`` code paths with
:func:`chaosfm.models.generate` (vmapped over keys) and decodes them into the original units:

- candle tokenizers (FSQ, VQ-VAE): ``ceil(H / P)`` codes are decoded *after* the context's codes
  (the decoder is causal, so the context fills its receptive field); the decoded log returns
  (``log_return``, or ``symlog_return`` inverted) rebuild the close from the last close of the
  context. The forecast is of ``close``.
- bins: ``H * C`` codes, channels interleaved row by row as in training, decoded with the
  context's own mean-abs scale (Chronos, Sec. 3.1); PAD and EOS, which never encode data, are
  replaced by the nearest bin.

The forecaster does not fit: ``fit`` keeps the run's ``trained_through``, and
:meth:`upstream_trained_through` gives the tokenizer's, so the protocol tells in-sample,
within-pretrain and fresh windows apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.data import DataError, TrainedThrough, trained_through_from_json
from chaosfm.evaluate._forecast import AbstractForecaster, Forecast, require_key

__all__ = ["TokenForecaster"]


class TokenForecaster(AbstractForecaster):
    """Forecasts by sampling code paths from a trained run (``chaosfm train``).

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
        from chaosfm.tokenizers import load_tokenizer
        from chaosfm.train import CODES_FILE, TOKENIZER_DIR, load_run

        root = Path(run_dir)
        if not (root / CODES_FILE).is_file():
            raise ConfigError(
                f"{root}: not a run of `chaosfm train --config` ({CODES_FILE} is missing)"
            )
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        self.model, self.meta = load_run(root)
        self.tokenizer = load_tokenizer(root / TOKENIZER_DIR)
        self.layout = json.loads((root / CODES_FILE).read_text())
        self.run_dir = root
        self.name = f"{self.model.kind}:{root.name}"
        self.temperature, self.top_k = float(temperature), top_k
        self.context_codes = int(context_codes or self.model.config.context_length)
        self.trained_through = trained_through_from_json(self.meta.get("trained_through"))
        self.columns = list(self.layout["columns"])
        self.kinds = ("market",) if "close" in self.columns else ("trajectory",)

    @property
    def is_bins(self) -> bool:
        return self.layout["tokenizer"] == "bins"

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
        if self.temperature > 0:
            require_key(key, f"{self.name}.forecast")
        elif key is None:
            key = jax.random.key(0)
        if horizon < 1 or num_samples < 1:
            raise ValueError(f"horizon and num_samples must be >= 1, got {horizon}, {num_samples}")
        missing = [c for c in self.columns if c not in context.columns]
        if missing:
            raise DataError(f"{self.name}: the context lacks column(s) {missing}", rule="columns")
        asset = str(context["asset"].iloc[0]) if "asset" in context.columns else None
        if self.is_bins:
            samples = self._forecast_bins(context, horizon, num_samples, key)
        else:
            samples = self._forecast_candles(context, horizon, num_samples, key)
        return Forecast(samples, self.columns, asset=asset)

    # --- internals -------------------------------------------------------------------------------

    def _sample(self, prompt: np.ndarray, exo: np.ndarray | None, n: int, num_samples: int, key: Any) -> np.ndarray:
        """``(S, n)`` codes following ``prompt``."""
        from chaosfm.models import generate

        prompt_j = jnp.asarray(prompt, jnp.int32)
        exo_j = None if exo is None else jnp.asarray(exo, jnp.float32)
        drawn = generate(
            self.model, prompt_j, n, self.temperature, self.top_k, key=key, exo=exo_j, num_samples=num_samples
        )
        return np.asarray(drawn)

    def _exo(self, context: pd.DataFrame, ends: np.ndarray) -> np.ndarray | None:
        if not self.model.uses_exo:
            return None
        from chaosfm.train import exo_series

        return exo_series(context.reset_index(drop=True), ends, self.columns, self.layout["exo"])

    def _forecast_bins(self, context: pd.DataFrame, horizon: int, num_samples: int, key: Any) -> np.ndarray:
        from chaosfm.train import code_streams

        channels = len(self.columns)
        ((codes, ends),) = code_streams(self.tokenizer, context).values()
        values = context[self.columns].to_numpy(np.float64)
        _, scale = self.tokenizer.encode_values(values)
        keep = max(channels, self.context_codes // channels * channels)  # whole rows only
        prompt, prompt_ends = codes[-keep:], ends[-keep:]
        drawn = self._sample(prompt, self._exo(context, prompt_ends), horizon * channels, num_samples, key)
        drawn = np.maximum(drawn, self.tokenizer.special_tokens)  # PAD/EOS encode no value
        paths = drawn.reshape(num_samples, horizon, channels)  # (S, H, C)
        return np.stack([self.tokenizer.decode(path, scale=scale) for path in paths])

    def _forecast_candles(self, context: pd.DataFrame, horizon: int, num_samples: int, key: Any) -> np.ndarray:
        from chaosfm.train import code_streams

        names = list(self.tokenizer.value_names)
        if "log_return" in names:
            index, inverse = names.index("log_return"), lambda x: x
        elif "symlog_return" in names:
            index = names.index("symlog_return")
            inverse = lambda x: np.sign(x) * np.expm1(np.abs(x)) / 100.0  # noqa: E731
        else:
            raise ConfigError(
                f"{self.name}: the tokenizer's features {names} hold no log_return or symlog_return; "
                "close prices cannot be rebuilt from them"
            )
        patch = int(self.layout["patch"] or 1)
        # Codes cover whole patches from the first row: drop the oldest rows so the last code ends
        # at the forecast origin.
        context = context.iloc[len(context) % patch :]
        ((codes, ends),) = code_streams(self.tokenizer, context).values()
        prompt, prompt_ends = codes[-self.context_codes :], ends[-self.context_codes :]
        n = -(-horizon // patch)
        drawn = self._sample(prompt, self._exo(context, prompt_ends), n, num_samples, key)
        # The decoder is causal: decode after the context's codes so its receptive field is filled.
        lead = codes[-min(codes.size, 64) :]
        paths = np.concatenate([np.broadcast_to(lead, (drawn.shape[0], lead.size)), drawn], axis=1)
        returns = self.tokenizer.decode(paths)[:, lead.size * patch :, index][:, :horizon]  # (S, H)
        last_close = float(context["close"].iloc[-1])
        return last_close * np.exp(np.cumsum(inverse(returns), axis=1))
