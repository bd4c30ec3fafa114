"""The online universal stochastic predictor.

Online pieces are pure ``init(...) -> state`` / ``update(state, x) -> (out, state)`` functions
over NamedTuple states; :func:`run_stream` runs the whole predictor over a series or stdin lines
and returns its rows and scores (the ``chaosfm stream`` job writes them).
"""

from chaosfm._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "chaosfm.predictor._config": (
        "CusumConfig",
        "DGMConfig",
        "HoelderConfig",
        "IMEXConfig",
        "OrchestratorConfig",
        "PredictorConfig",
        "SignatureConfig",
        "StableConfig",
        "StreamConfig",
    ),
    "chaosfm.predictor._cusum": ("CusumOutput", "CusumState", "init_cusum", "run_cusum", "update_cusum"),
    "chaosfm.predictor._holder": ("HoelderOutput", "hoelder_wtmm", "hoelder_wtmm_windowed", "window_margin"),
    "chaosfm.predictor._kernel_stable": (
        "StableOutput",
        "StableParams",
        "fit_stable",
        "predict_stable",
        "sample_stable",
    ),
    "chaosfm.predictor._meta": (
        "MetaParams",
        "MetaState",
        "OneStep",
        "crps_and_gradient",
        "init_meta",
        "initial_meta",
        "meta_optimizer",
        "mixture_crps",
        "one_step_crps",
        "update_meta",
    ),
    "chaosfm.predictor._orchestrator": (
        "OrchestratorOutput",
        "OrchestratorState",
        "init_orchestrator",
        "mixing_weights",
        "update_orchestrator",
    ),
    "chaosfm.predictor._draws": ("KERNELS",),
    "chaosfm.predictor._predictor": (
        "PredictorOutput",
        "PredictorState",
        "init_predictor",
        "kurtosis_tiers",
        "update_predictor",
        "warm_start",
    ),
    "chaosfm.predictor._stream": (
        "PREDICTION_COLUMNS",
        "STREAM_TELEMETRY_COLUMNS",
        "Resent",
        "StreamResult",
        "run_stream",
    ),
    "chaosfm.predictor._telemetry": ("FLAGS", "TELEMETRY_COLUMNS"),
    "chaosfm.predictor._metrics_server": ("MetricsServer",),
    "chaosfm.predictor._snapshot": ("Snapshot", "SnapshotError", "StreamProgress", "load_snapshot", "save_snapshot"),
    "chaosfm.predictor._warm": ("compilation_cache_dir", "deterministic_mode", "enable_compilation_cache", "warm_up"),
    "chaosfm.predictor._dgm_pde": ("PDESolution", "solve_terminal_pde"),
    "chaosfm.predictor._forecaster": ("OnlinePredictorForecaster",),
    "chaosfm.predictor._malliavin": ("Greek", "MalliavinPath", "delta", "malliavin_path"),
    "chaosfm.predictor._greeks": (
        "BasketGreeks",
        "DigitalGreeks",
        "basket_digital_greeks",
        "digital_closed_form",
        "digital_greeks",
    ),
})
