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
from chaosfm.evaluate._multitask import multitask_table, run_multitask, score_multitask
from chaosfm.evaluate._scoring import DEFAULT_SCORES, SCORES, Window
from chaosfm.evaluate._probes import (  # registers the long_short_return score
    JEPAForecaster,
    long_short_return,
    probe_study,
    probe_windows,
    relative_crps,
)
from chaosfm.evaluate._leakage_study import LeakageConfig, leakage_tables, run_leakage
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
from chaosfm.evaluate._walk_forward import Fold, FoldScore, WalkForwardValidator

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
    "multitask_table",
    "run_multitask",
    "score_multitask",
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
    "Fold",
    "FoldScore",
    "WalkForwardValidator",
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
    # heads on a pretrained JEPA
    "JEPAForecaster",
    "long_short_return",
    "probe_study",
    "probe_windows",
    "relative_crps",
    "LeakageConfig",
    "leakage_tables",
    "run_leakage",
]
