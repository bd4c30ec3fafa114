"""The one training loop every chaosfm model uses, and what its jobs train with: code streams and
their loss, the window sampler, stage objectives, JEPA and multitask pieces, run folders.

Jobs (``chaosfm.jobs``) read configs, load and fence data and write run folders; this package
takes arrays, frames and config objects.
"""

from chaosfm.train._checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_newest_intact,
    save_checkpoint,
)
from chaosfm.train._codes import CodeData, code_loss, exo_series, exo_statistics, fit_code_model, row_volatility
from chaosfm.train._config import (
    GPTSection,
    MambaSection,
    ModelSection,
    TrainConfig,
    TrainRunConfig,
    check_against_data,
    parse_train_run_config,
    stream_lengths,
)
from chaosfm.train._encoder_inputs import (
    CLOSE_FEATURES,
    FEATURES,
    EncoderInputs,
    EncoderStream,
    FeatureScaler,
    check_candle_tokenizer,
    feature_set,
    feature_streams,
)
from chaosfm.train._evaluate import evaluate_codes, next_token_metrics, unigram_perplexity
from chaosfm.train._jepa import embed_windows, heldout_spread
from chaosfm.train._loop import (
    LOG_FILE,
    NonFiniteError,
    TrainResult,
    learning_rate_schedule,
    make_optimizer,
    train,
)
from chaosfm.train._mesh import data_mesh
from chaosfm.train._multitask import (
    MultitaskData,
    MultitaskSettings,
    multitask_batches,
    predict_history,
    prepare_multitask_data,
    tbptt_loss,
)
from chaosfm.train._reinforce import (
    exact_kl,
    horizon_loss,
    reinforce_surrogate,
    return_mse_reward,
    rl_loss,
    sequence_log_probs,
    token_accuracy_reward,
)
from chaosfm.train._runs import (
    CODES_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    SCALER_FILE,
    TOKENIZER_DIR,
    CodeRun,
    load_code_run,
    load_multitask_run,
    load_pretrained,
    load_run,
    serialise,
    tokenizer_sha256,
)
from chaosfm.train._stages import STAGES, RL, SFT, AbstractStage, Midtrain, Pretrain, StageSettings
from chaosfm.train._windows import WindowSampler

__all__ = [
    # the loop
    "LOG_FILE",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "learning_rate_schedule",
    "make_optimizer",
    "train",
    "data_mesh",
    "Checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_newest_intact",
    "save_checkpoint",
    "WindowSampler",
    # code models
    "CodeData",
    "GPTSection",
    "MambaSection",
    "ModelSection",
    "TrainRunConfig",
    "check_against_data",
    "code_loss",
    "evaluate_codes",
    "exo_series",
    "exo_statistics",
    "fit_code_model",
    "next_token_metrics",
    "parse_train_run_config",
    "row_volatility",
    "stream_lengths",
    "unigram_perplexity",
    # stages
    "STAGES",
    "AbstractStage",
    "Midtrain",
    "Pretrain",
    "RL",
    "SFT",
    "StageSettings",
    "exact_kl",
    "horizon_loss",
    "reinforce_surrogate",
    "return_mse_reward",
    "rl_loss",
    "sequence_log_probs",
    "token_accuracy_reward",
    # JEPA
    "CLOSE_FEATURES",
    "FEATURES",
    "EncoderInputs",
    "EncoderStream",
    "FeatureScaler",
    "check_candle_tokenizer",
    "embed_windows",
    "feature_set",
    "feature_streams",
    "heldout_spread",
    # multitask head
    "MultitaskData",
    "MultitaskSettings",
    "multitask_batches",
    "predict_history",
    "prepare_multitask_data",
    "tbptt_loss",
    # run folders
    "CODES_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_CONFIG_FILE",
    "MODEL_FILE",
    "SCALER_FILE",
    "TOKENIZER_DIR",
    "CodeRun",
    "load_code_run",
    "load_multitask_run",
    "load_pretrained",
    "load_run",
    "serialise",
    "tokenizer_sha256",
]
