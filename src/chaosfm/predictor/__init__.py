"""The online universal stochastic predictor (issue 5).

Online pieces are pure ``init(...) -> state`` / ``update(state, x) -> (out, state)`` functions
over NamedTuple states; :func:`run_stream` runs the whole predictor over a series or stdin lines.
"""

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
from chaosfm.predictor._forecaster import OnlinePredictorForecaster
from chaosfm.predictor._holder import HoelderOutput, hoelder_wtmm
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
from chaosfm.predictor._predictor import (
    KERNELS,
    PredictorOutput,
    PredictorState,
    init_predictor,
    update_predictor,
    warm_start,
)
from chaosfm.predictor._stream import run_stream

__all__ = [
    "KERNELS",
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
    "fit_stable",
    "hoelder_wtmm",
    "init_cusum",
    "init_orchestrator",
    "init_predictor",
    "mixing_weights",
    "predict_stable",
    "run_cusum",
    "run_stream",
    "sample_stable",
    "update_cusum",
    "update_orchestrator",
    "update_predictor",
    "warm_start",
]
