"""The one training loop every chaosfm model uses, and the job that trains code models with it."""

from chaosfm.train._checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from chaosfm.train._codes import CodeData, WindowSampler, code_loss, load_run, run_train
from chaosfm.train._config import (
    GPTSection,
    MambaSection,
    ModelSection,
    TrainConfig,
    TrainRunConfig,
    check_against_data,
    parse_train_run_config,
)
from chaosfm.train._tokenized import (
    CODES_FILE,
    TOKENIZER_DIR,
    DataSection,
    TokenizerSection,
    TrainRunFile,
    code_streams,
    exo_series,
    parse_train_run_file,
    read_train_run_file,
    run_train_tokenized,
)
from chaosfm.train._evaluate import evaluate_codes, next_token_metrics, unigram_perplexity
from chaosfm.train._loop import (
    LOG_FILE,
    NonFiniteError,
    TrainResult,
    learning_rate_schedule,
    make_optimizer,
    train,
)

__all__ = [
    "CODES_FILE",
    "TOKENIZER_DIR",
    "DataSection",
    "TokenizerSection",
    "TrainRunFile",
    "code_streams",
    "exo_series",
    "parse_train_run_file",
    "read_train_run_file",
    "run_train_tokenized",
    "LOG_FILE",
    "Checkpoint",
    "CodeData",
    "GPTSection",
    "MambaSection",
    "ModelSection",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "TrainRunConfig",
    "WindowSampler",
    "check_against_data",
    "code_loss",
    "evaluate_codes",
    "latest_checkpoint",
    "learning_rate_schedule",
    "list_checkpoints",
    "load_checkpoint",
    "load_run",
    "make_optimizer",
    "next_token_metrics",
    "parse_train_run_config",
    "run_train",
    "save_checkpoint",
    "train",
    "unigram_perplexity",
]
