"""The held-out loss during training: what the loop logs and on which windows, the compiling note.

Which rows are held out: tests/data/test_heldout.py."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.train import (
    CodeData,
    TrainConfig,
    fit_code_model,
    hold_out,
    load_checkpoint,
    make_optimizer,
    parse_train_run_config,
    train,
)

from ._toy import toy_batches, toy_loss, toy_model


CONFIG = TrainConfig(steps=10, batch_size=8, learning_rate=0.3, warmup_steps=2, checkpoint_every=4,
                     keep_checkpoints=3, log_every=3, eval_every=4, seed=5)


def test_the_loop_logs_the_loss_of_the_held_out_batch_with_the_weights_of_that_step(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    heldout = {"x": x, "y": x @ np.ones((3, 2), np.float32), "gate": np.float32(1.0)}
    drawn = []
    result = train(toy_model(), toy_loss, toy_batches(), CONFIG, tmp_path, heldout=heldout,
                   on_checkpoint=drawn.append)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    held = {line["step"]: line["val_loss"] for line in lines if "val_loss" in line}
    assert sorted(held) == [4, 8, 10]  # every eval_every steps and at the end
    assert [line["step"] for line in lines if "loss" in line] == [3, 6, 9, 10]  # log_every is untouched
    assert drawn == [4, 8, 10]  # on_checkpoint after each checkpoint

    # By hand: the toy's loss on the held-out batch with the weights of the step, under the key
    # fold_in(key(seed), 2), the same at every evaluation.
    key = jax.random.fold_in(jax.random.key(CONFIG.seed), 2)

    def by_hand(model):
        noisy = heldout["x"] + 0.1 * np.asarray(jax.random.normal(key, heldout["x"].shape))
        fit = np.mean((noisy @ np.asarray(model.w) - heldout["y"]) ** 2)
        return fit + 0.01 * np.sum(np.abs(np.asarray(model.v)))

    assert held[10] == pytest.approx(by_hand(result.model), rel=1e-5)
    params = toy_model()
    step4 = load_checkpoint(tmp_path / "checkpoints" / "step_00000004", params_like=params,
                            opt_state_like=make_optimizer(CONFIG, params).init(params))
    assert held[4] == pytest.approx(by_hand(step4.params), rel=1e-5)
    assert held[4] != pytest.approx(held[10])


def test_the_held_out_loss_of_a_code_model_is_its_cross_entropy_on_the_last_training_codes(tmp_path):
    rng = np.random.default_rng(3)
    codes = {"a": rng.integers(0, 12, 400).astype(np.int32), "b": rng.integers(0, 12, 150).astype(np.int32)}
    config = parse_train_run_config({
        "model": {"kind": "gpt", "vocab_size": 12, "context_length": 16, "d_model": 16, "n_layers": 1},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 2},
    })
    result = fit_code_model(config, CodeData(train=codes, vocab_size=12), tmp_path, val_fraction=0.1)
    logged = [e for e in result.history if "val_loss" in e]
    assert [e["step"] for e in logged] == [1, 2, 3, 4]  # eval_every unset: a tenth of 4 steps, at least 1

    # The held-out codes: a's last 40 (ceil(0.1 * 400)), b's last 17 (one window of 16 + 1). The
    # windows end at each stream's last code and do not overlap: a holds two, b one.
    window = 17
    windows = [codes["a"][400 - window:], codes["a"][400 - 2 * window : 400 - window], codes["b"][150 - window:]]
    nll = []
    for w in windows:
        logits, _ = result.model(jnp.asarray(w[:-1]))
        log_p = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), np.float64)
        nll.append(-log_p[np.arange(window - 1), w[1:]])
    assert logged[-1]["val_loss"] == pytest.approx(np.mean(nll), rel=1e-5)


def test_a_compiling_first_step_is_announced_when_progress_is_shown(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    config = TrainConfig(**{**CONFIG.model_dump(), "steps": 2})
    train(toy_model(), toy_loss, toy_batches(), config, tmp_path / "a", description="train toy")
    assert "train toy: compiling (first step)..." in capsys.readouterr().err
    monkeypatch.setenv("CHAOSFM_QUIET", "1")
    train(toy_model(), toy_loss, toy_batches(), config, tmp_path / "b", description="train toy")
    assert "compiling" not in capsys.readouterr().err
    monkeypatch.setenv("CHAOSFM_PROGRESS", "0")
    monkeypatch.delenv("CHAOSFM_QUIET")
    train(toy_model(), toy_loss, toy_batches(), config, tmp_path / "c", description="train toy")
    assert "compiling" not in capsys.readouterr().err


def test_a_run_without_held_out_rows_says_why(capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_QUIET", "0")
    streams = {"a": {"codes": np.arange(15)}}
    kept, batch = hold_out(streams, 0.2, 10, 4, label="train gpt")
    assert batch is None and kept["a"]["codes"].size == 15  # everything still trains
    assert "train gpt: no held-out loss: no training stream is long enough" in capsys.readouterr().err
    kept, batch = hold_out({"a": {"codes": np.arange(40)}}, 0.2, 10, 4)
    assert kept["a"]["codes"].max() < batch["codes"].min() and batch["codes"].max() == 39
