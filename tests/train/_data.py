"""Small deterministic code streams and configs shared by the training tests."""

import numpy as np

from chaosfm.train import CodeData, parse_train_run_config

PERIOD = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int32)


def periodic_data(length: int = 800, held_out: int = 160) -> CodeData:
    codes = np.tile(PERIOD, -(-(length + held_out) // PERIOD.size))[: length + held_out]
    return CodeData(train={"a": codes[:length]}, valid={"a": codes[length:]}, vocab_size=10)


def tiny_config(kind: str = "gpt", **train) -> dict:
    model = {"kind": kind, "vocab_size": 10, "context_length": 16, "d_model": 32, "n_layers": 1}
    if kind == "mamba":
        model.update(d_state=8, head_dim=16, chunk_size=8)
    loop = {
        "steps": 12,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "warmup_steps": 2,
        "checkpoint_every": 5,
        "log_every": 1,
        "seed": 3,
        **train,
    }
    return {"model": model, "train": loop}


def tiny_run_config(kind: str = "gpt", **train):
    return parse_train_run_config(tiny_config(kind, **train))
