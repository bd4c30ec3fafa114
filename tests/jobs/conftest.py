"""Fixtures shared by the job tests: the four-stage chain (``test_stage.py`` and ``test_pipeline.py``)."""

import pytest

LORENZ = {"names": ["lorenz63"], "options": {"length": 1000}, "embargo": 10}
LOOP = {"batch_size": 4, "warmup_steps": 1, "checkpoint_every": 50, "log_every": 1}


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """pretrain (fits bins + a GPT) -> midtrain -> sft -> rl, a few steps each, through ``jobs.stage.run``.

    Returns the run folders and the metrics each ``run`` returned, by stage name.
    """
    from chaosfm.jobs.stage import StageConfig, run

    root = tmp_path_factory.mktemp("stages")
    runs = {name: root / name for name in ("pretrain", "midtrain", "sft", "rl")}
    results = {
        "pretrain": run(
            StageConfig(
                stage="pretrain", data=LORENZ,
                tokenizer={"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
                model={"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1},
                train={"steps": 5, "learning_rate": 0.01, **LOOP},
                out=runs["pretrain"],
            )
        ),
        "midtrain": run(
            StageConfig(stage="midtrain", parent=str(runs["pretrain"]), train={"steps": 3}, out=runs["midtrain"])
        ),
        "sft": run(
            StageConfig(stage="sft", parent=str(runs["midtrain"]), horizon=6, train={"steps": 3}, out=runs["sft"])
        ),
        "rl": run(
            StageConfig(stage="rl", parent=str(runs["sft"]), horizon=6, samples=4, kl_coef=0.1, train={"steps": 4},
                        out=runs["rl"])
        ),
    }
    return runs, results
