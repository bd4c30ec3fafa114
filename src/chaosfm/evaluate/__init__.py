"""Splits, metrics, baselines and the leakage-aware evaluation protocol."""

from chaosfm.evaluate._forecast import AbstractForecaster, Forecast, numpy_rng, require_key

__all__ = ["AbstractForecaster", "Forecast", "numpy_rng", "require_key"]
