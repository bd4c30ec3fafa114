"""The online predictor behind the ``AbstractForecaster`` protocol, so ``evaluate`` can score it."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pandas as pd

from chaosfm._random import numpy_rng
from chaosfm.data import DataError, trained_through
from chaosfm.forecasters import AbstractForecaster, Forecast, require_key
from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._predictor import PredictorOutput, init_predictor, warm_start


class OnlinePredictorForecaster(AbstractForecaster):
    """Runs the online predictor through ``fit``'s frame, then through each context.

    ``forecast`` continues from the state ``fit`` left (rows of the context at or before
    ``trained_through`` are skipped, later rows are fed one by one) and samples ``horizon`` steps
    as sums of i.i.d. increments drawn from the last step's kernel mixture: a one-step
    predictor's distribution carried forward, not a multi-step model.
    """

    name = "online_predictor"

    def __init__(self, config: PredictorConfig | None = None, *, seed: int = 0):
        self.config = config or PredictorConfig()
        self.seed = seed
        self.state = None
        self.last_output: PredictorOutput | None = None
        self.column: str | None = None

    def _feed(self, state, values: np.ndarray):
        step = packed_step(self.config)
        out = self.last_output
        packed = step.pack(state)
        for value in values:
            if not np.isfinite(value):
                raise DataError(f"value {value!r} is NaN or infinite", rule="finite values")
            packed_out, packed = step(packed, np.float32(value))
            out = step.output(packed_out)
            if int(out.count) == self.config.warmup:
                state = warm_start(step.unpack(packed), self.config, key=jax.random.key(self.seed + 1))
                packed = step.pack(state)
        return step.unpack(packed), out

    def fit(self, frame: pd.DataFrame) -> "OnlinePredictorForecaster":
        if frame["asset"].nunique() != 1:
            raise DataError("the online predictor follows one asset; split the frame first", rule="one asset")
        self.column = self.target_columns(frame)[0]
        values = frame[self.column].to_numpy(np.float64)
        state = init_predictor(self.config, float(values[0]), key=jax.random.key(self.seed))
        self.state, self.last_output = self._feed(state, values[1:])
        self.trained_through = trained_through(frame)
        return self

    def forecast(self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None) -> Forecast:
        key = require_key(key, type(self).__name__)
        if self.state is None:
            self.fit(context)
            fresh = context.iloc[0:0]
        else:
            asset = str(context["asset"].iloc[0])
            seen = (self.trained_through or {}).get(asset)
            fresh = context if seen is None else context[context["timestamp"] > seen]
        state, out = self._feed(self.state, fresh[self.column].to_numpy(np.float64))
        if out is None:
            raise DataError("no observation after warm-up to forecast from", rule="enough history")
        last = float(context[self.column].iloc[-1])
        rng = numpy_rng(key)
        if self.config.increments == "log":
            steps = np.log(np.asarray(out.samples, np.float64) / last)
        else:
            steps = np.asarray(out.samples, np.float64) - last
        draws = rng.choice(steps, size=(num_samples, horizon), replace=True)
        paths = np.cumsum(draws, axis=1)
        paths = last * np.exp(paths) if self.config.increments == "log" else last + paths
        return Forecast(paths, [self.column], asset=str(context["asset"].iloc[0]))
