"""Splits, metrics, scoring and the leakage-aware evaluation protocol.

It reads only ``chaosfm.data`` and the forecaster protocol (``chaosfm.forecasters``): every model
is scored through ``fit``/``forecast``, whatever it is. The protocol and the baselines are
re-exported here for code written against earlier versions.
"""

import sys
import types

from chaosfm._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "chaosfm.evaluate._backtest": ("PNL_COLUMNS", "PORTFOLIO", "backtest", "instrument_labels", "strategy_name"),
    "chaosfm.evaluate._backtest_rules": ("RULES", "BacktestSettings", "forecast_volatility", "get_rule", "trade_cost"),
    "chaosfm.evaluate._backtest_stats": (
        "backtest_statistics",
        "drawdown",
        "equity_curve",
        "strategy_returns",
        "summarise_returns",
    ),
    "chaosfm.evaluate._bootstrap": ("bootstrap_interval", "mean_difference", "no_interval"),
    "chaosfm.evaluate._forecasts": ("ForecastTable", "quantile_names", "reliability"),
    "chaosfm.evaluate._frame": ("evaluate_frame",),
    "chaosfm.evaluate._metrics": (
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
    ),
    "chaosfm.evaluate._paired": ("block_means", "overlap_block", "paired_differences"),
    "chaosfm.evaluate._multitask": ("multitask_table", "score_multitask"),
    "chaosfm.evaluate._probes": ("probe_scores",),
    "chaosfm.evaluate._protocol": (
        "CLASSES",
        "Example",
        "Protocol",
        "Results",
        "classify_window",
        "cutoff_to_json",
        "evaluate",
        "fit_through",
        "nan_to_none",
        "vpt_clock",
        "window_class_at",
    ),
    "chaosfm.evaluate._scoring": (
        "COVERAGE_TARGETS",
        "DEFAULT_SCORES",
        "HIGHER_IS_BETTER",
        "SCORES",
        "Window",
        "is_vpt",
        "long_short_return",
        "relative_crps",
        "resolve_scores",
    ),
    "chaosfm.evaluate._sharpe": (
        "BacktestOverfitting",
        "deflated_sharpe_ratio",
        "expected_maximum_sharpe_ratio",
        "probabilistic_sharpe_ratio",
        "probability_of_backtest_overfitting",
        "sharpe_confidence_interval",
        "sharpe_ratio",
        "sharpe_standard_error",
    ),
    "chaosfm.evaluate._splits": (
        "CombinatorialPurgedCV",
        "combinatorial_purged_cv",
        "fresh_split",
        "purged_kfold",
        "walk_forward",
    ),
    "chaosfm.evaluate._walk_forward": ("Fold", "FoldScore", "WalkForwardValidator"),
    "chaosfm.forecasters": (
        "FORECASTERS",
        "AbstractForecaster",
        "AutoRegressive",
        "ContextParroting",
        "Forecast",
        "Garch",
        "LastValue",
        "RandomWalk",
        "SeasonalNaive",
        "make_forecaster",
        "require_key",
    ),
})


class _CallablePackage(types.ModuleType):
    """``chaosfm.evaluate(df, models, h)`` is :func:`evaluate_frame`: the field's libraries call
    their frame scorer ``evaluate`` (utilsforecast), and that name is this package's, so the
    package itself answers the call (module ``__class__`` assignment, supported since Python 3.5)."""

    def __call__(self, df, models, h=5, **options):  # noqa: ANN001 - evaluate_frame's signature
        from chaosfm.evaluate._frame import evaluate_frame

        return evaluate_frame(df, models, h, **options)


sys.modules[__name__].__class__ = _CallablePackage
