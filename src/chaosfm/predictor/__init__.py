"""The online universal stochastic predictor (issue 5)."""

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
from chaosfm.predictor._kernel_stable import (
    StableOutput,
    StableParams,
    fit_stable,
    predict_stable,
    sample_stable,
)
from chaosfm.predictor._orchestrator import (
    OrchestratorOutput,
    OrchestratorState,
    init_orchestrator,
    mixing_weights,
    update_orchestrator,
)
from chaosfm.predictor._holder import HoelderOutput, hoelder_wtmm
from chaosfm.predictor._cusum import CusumOutput, CusumState, init_cusum, run_cusum, update_cusum

__all__ = [
    "CusumConfig",
    "CusumOutput",
    "CusumState",
    "DGMConfig",
    "HoelderConfig",
    "HoelderOutput",
    "IMEXConfig",
    "OrchestratorConfig",
    "OrchestratorOutput",
    "OrchestratorState",
    "PredictorConfig",
    "SignatureConfig",
    "StableConfig",
    "StableOutput",
    "StableParams",
    "StreamConfig",
    "fit_stable",
    "hoelder_wtmm",
    "init_cusum",
    "init_orchestrator",
    "mixing_weights",
    "predict_stable",
    "run_cusum",
    "sample_stable",
    "update_cusum",
    "update_orchestrator",
]
