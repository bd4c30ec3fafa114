"""Splits, metrics, baselines and the leakage-aware evaluation protocol."""

from chaosfm.evaluate._forecast import AbstractForecaster, Forecast, numpy_rng, require_key
from chaosfm.evaluate._baselines import (
    BASELINES,
    AutoRegressive,
    Garch,
    LastValue,
    RandomWalk,
    SeasonalNaive,
    make_baseline,
)
from chaosfm.evaluate._parroting import ContextParroting  # registers itself in BASELINES
from chaosfm.evaluate._token_forecaster import TokenForecaster
from chaosfm.evaluate._protocol import (
    CLASSES,
    Example,
    Protocol,
    Results,
    classify_window,
    evaluate,
    fit_through,
    nan_to_none,
)
from chaosfm.evaluate._scoring import DEFAULT_SCORES, SCORES, Window
from chaosfm.evaluate._metrics import (
    coverage,
    crps,
    directional_accuracy,
    mae,
    mase,
    normalised_error,
    pinball,
    rmse,
    smape,
    valid_prediction_time,
    wql,
)
from chaosfm.evaluate._sharpe import (
    BacktestOverfitting,
    deflated_sharpe_ratio,
    expected_maximum_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_confidence_interval,
    sharpe_ratio,
    sharpe_standard_error,
)
from chaosfm.evaluate._splits import (
    CombinatorialPurgedCV,
    combinatorial_purged_cv,
    fresh_split,
    purged_kfold,
    walk_forward,
)

__all__ = [
    "AbstractForecaster",
    "CLASSES",
    "DEFAULT_SCORES",
    "Example",
    "Forecast",
    "Protocol",
    "Results",
    "SCORES",
    "Window",
    "classify_window",
    "evaluate",
    "fit_through",
    "nan_to_none",
    "numpy_rng",
    "require_key",
    # metrics, Sharpe family, splits
    "coverage",
    "crps",
    "directional_accuracy",
    "mae",
    "mase",
    "normalised_error",
    "pinball",
    "rmse",
    "smape",
    "valid_prediction_time",
    "wql",
    "BacktestOverfitting",
    "deflated_sharpe_ratio",
    "expected_maximum_sharpe_ratio",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "sharpe_confidence_interval",
    "sharpe_ratio",
    "sharpe_standard_error",
    "CombinatorialPurgedCV",
    "combinatorial_purged_cv",
    "fresh_split",
    "purged_kfold",
    "walk_forward",
    # baselines
    "AutoRegressive",
    "BASELINES",
    "ContextParroting",
    "Garch",
    "LastValue",
    "RandomWalk",
    "SeasonalNaive",
    "TokenForecaster",
    "make_baseline",
]
