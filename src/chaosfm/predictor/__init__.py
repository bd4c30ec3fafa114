"""The online universal stochastic predictor.

Online pieces are pure ``init(...) -> state`` / ``update(state, x) -> (out, state)`` functions
over NamedTuple states; :func:`run_stream` runs the whole predictor over a series or stdin lines
and returns its rows and scores (the ``chaosfm stream`` job writes them).
"""

from typing import TYPE_CHECKING

from chaosfm._lazy import attach

if TYPE_CHECKING:  # what each name is, for readers and type checkers; at run time `attach` imports on first use
    from chaosfm.predictor._config import (
        CusumConfig,
        DGMConfig,
        HoelderConfig,
        IMEXConfig,
        OrchestratorConfig,
        PredictorConfig,
        SignatureConfig,
        StableConfig,
        StreamConfig,
    )
    from chaosfm.predictor._cusum import CusumOutput, CusumState, init_cusum, run_cusum, update_cusum
    from chaosfm.predictor._holder import HoelderOutput, hoelder_wtmm, hoelder_wtmm_windowed, window_margin
    from chaosfm.predictor._kernel_stable import (
        StableOutput,
        StableParams,
        fit_stable,
        predict_stable,
        sample_stable,
    )
    from chaosfm.predictor._meta import (
        MetaParams,
        MetaState,
        OneStep,
        crps_and_gradient,
        init_meta,
        initial_meta,
        meta_optimizer,
        mixture_crps,
        one_step_crps,
        update_meta,
    )
    from chaosfm.predictor._orchestrator import (
        OrchestratorOutput,
        OrchestratorState,
        init_orchestrator,
        mixing_weights,
        update_orchestrator,
    )
    from chaosfm.predictor._draws import KERNELS
    from chaosfm.predictor._predictor import (
        PredictorOutput,
        PredictorState,
        init_predictor,
        kurtosis_tiers,
        update_predictor,
        warm_start,
    )
    from chaosfm.predictor._stream import PREDICTION_COLUMNS, STREAM_TELEMETRY_COLUMNS, Resent, StreamResult, run_stream
    from chaosfm.predictor._telemetry import FLAGS, TELEMETRY_COLUMNS
    from chaosfm.predictor._metrics_server import MetricsServer
    from chaosfm.predictor._snapshot import Snapshot, SnapshotError, StreamProgress, load_snapshot, save_snapshot
    from chaosfm.predictor._warm import compilation_cache_dir, deterministic_mode, enable_compilation_cache, warm_up
    from chaosfm.predictor._dgm_pde import PDESolution, solve_terminal_pde
    from chaosfm.predictor._forecaster import OnlinePredictorForecaster
    from chaosfm.predictor._malliavin import Greek, MalliavinPath, delta, malliavin_path
    from chaosfm.predictor._greeks import (
        BasketGreeks,
        DigitalGreeks,
        basket_digital_greeks,
        digital_closed_form,
        digital_greeks,
    )

__getattr__, __dir__ = attach(__name__, {
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

__all__ = [
    "FLAGS",
    "KERNELS",
    "TELEMETRY_COLUMNS",
    "CusumConfig",
    "CusumOutput",
    "CusumState",
    "DGMConfig",
    "HoelderConfig",
    "HoelderOutput",
    "IMEXConfig",
    "OnlinePredictorForecaster",
    "OrchestratorConfig",
    "OrchestratorOutput",
    "OrchestratorState",
    "PredictorConfig",
    "PredictorOutput",
    "PredictorState",
    "SignatureConfig",
    "StableConfig",
    "StableOutput",
    "StableParams",
    "StreamConfig",
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
    "MetricsServer",
    "Snapshot",
    "SnapshotError",
    "StreamProgress",
    "StreamResult",
    "Resent",
    "compilation_cache_dir",
    "deterministic_mode",
    "enable_compilation_cache",
    "load_snapshot",
    "save_snapshot",
    "warm_up",
    "Greek",
    "MalliavinPath",
    "PDESolution",
    "delta",
    "malliavin_path",
    "solve_terminal_pde",
    "fit_stable",
    "hoelder_wtmm",
    "init_cusum",
    "init_orchestrator",
    "init_predictor",
    "kurtosis_tiers",
    "mixing_weights",
    "predict_stable",
    "run_cusum",
    "run_stream",
    "PREDICTION_COLUMNS",
    "STREAM_TELEMETRY_COLUMNS",
    "sample_stable",
    "update_cusum",
    "update_orchestrator",
    "update_predictor",
    "warm_start",
    "BasketGreeks",
    "DigitalGreeks",
    "basket_digital_greeks",
    "digital_closed_form",
    "digital_greeks",
    "hoelder_wtmm_windowed",
    "window_margin",
]

