"""Splits, metrics, scoring and the leakage-aware evaluation protocol.

It reads only ``chaosfm.data`` and the forecaster protocol (``chaosfm.forecasters``): every model
is scored through ``fit``/``forecast``, whatever it is. The protocol and the baselines are
re-exported here for code written against earlier versions.
"""

import sys
import types

from typing import TYPE_CHECKING

from chaosfm._lazy import attach

if TYPE_CHECKING:  # what each name is, for readers and type checkers; at run time `attach` imports on first use
    from chaosfm.evaluate._backtest import PNL_COLUMNS, PORTFOLIO, backtest, instrument_labels, strategy_name
    from chaosfm.evaluate._backtest_rules import RULES, BacktestSettings, forecast_volatility, get_rule, trade_cost
    from chaosfm.evaluate._backtest_stats import (
        backtest_statistics,
        drawdown,
        equity_curve,
        strategy_returns,
        summarise_returns,
    )
    from chaosfm.evaluate._bootstrap import bootstrap_interval, mean_difference, no_interval
    from chaosfm.evaluate._forecasts import ForecastTable, quantile_names, reliability
    from chaosfm.evaluate._frame import evaluate_frame
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
    from chaosfm.evaluate._paired import block_means, overlap_block, paired_differences
    from chaosfm.evaluate._multitask import multitask_table, score_multitask
    from chaosfm.evaluate._probes import probe_scores
    from chaosfm.evaluate._protocol import (
        CLASSES,
        Example,
        Protocol,
        Results,
        classify_window,
        cutoff_to_json,
        evaluate,
        fit_through,
        nan_to_none,
        vpt_clock,
        window_class_at,
    )
    from chaosfm.evaluate._scoring import (
        COVERAGE_TARGETS,
        DEFAULT_SCORES,
        HIGHER_IS_BETTER,
        SCORES,
        Window,
        is_vpt,
        long_short_return,
        relative_crps,
        resolve_scores,
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
    from chaosfm.forecasters import (
        FORECASTERS,
        AbstractForecaster,
        AutoRegressive,
        ContextParroting,
        Forecast,
        Garch,
        LastValue,
        RandomWalk,
        SeasonalNaive,
        make_forecaster,
        require_key,
    )

__getattr__, __dir__ = attach(__name__, {
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

__all__ = [
    # the protocol
    "CLASSES",
    "DEFAULT_SCORES",
    "COVERAGE_TARGETS",
    "Example",
    "ForecastTable",
    "HIGHER_IS_BETTER",
    "Protocol",
    "Results",
    "SCORES",
    "Window",
    "classify_window",
    "window_class_at",
    "cutoff_to_json",
    "evaluate",
    "fit_through",
    "is_vpt",
    "nan_to_none",
    "quantile_names",
    "reliability",
    "paired_differences",
    "block_means",
    "overlap_block",
    "resolve_scores",
    "vpt_clock",
    # one bootstrap
    "bootstrap_interval",
    "mean_difference",
    "no_interval",
    # metrics, Sharpe family, splits
    "coverage",
    "crps",
    "directional_accuracy",
    "long_short_return",
    "mae",
    "mase",
    "normalised_error",
    "pinball",
    "relative_crps",
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
    # the backtest
    "BacktestSettings",
    "trade_cost",
    "PNL_COLUMNS",
    "PORTFOLIO",
    "RULES",
    "backtest",
    "backtest_statistics",
    "drawdown",
    "equity_curve",
    "forecast_volatility",
    "get_rule",
    "instrument_labels",
    "strategy_name",
    "strategy_returns",
    "summarise_returns",
    "CombinatorialPurgedCV",
    "combinatorial_purged_cv",
    "fresh_split",
    "purged_kfold",
    "walk_forward",
    "Fold",
    "FoldScore",
    "WalkForwardValidator",
    # heads scored per class
    "multitask_table",
    "probe_scores",
    "score_multitask",
    # re-exported from chaosfm.forecasters
    "AbstractForecaster",
    "AutoRegressive",
    "FORECASTERS",
    "ContextParroting",
    "Forecast",
    "Garch",
    "LastValue",
    "RandomWalk",
    "SeasonalNaive",
    "make_forecaster",
    "require_key",
    # the frame API
    "evaluate_frame",
]


class _CallablePackage(types.ModuleType):
    """``chaosfm.evaluate(df, models, h)`` is :func:`evaluate_frame`: the field's libraries call
    their frame scorer ``evaluate`` (utilsforecast), and that name is this package's, so the
    package itself answers the call (module ``__class__`` assignment, supported since Python 3.5)."""

    def __call__(self, df, models, h=5, **options):  # noqa: ANN001 - evaluate_frame's signature
        from chaosfm.evaluate._frame import evaluate_frame

        return evaluate_frame(df, models, h, **options)


sys.modules[__name__].__class__ = _CallablePackage
