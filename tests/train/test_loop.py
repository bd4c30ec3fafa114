"""The training loop on a two-parameter toy: schedule, NaN guard, Ctrl-C, resume, damaged checkpoints."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError
from chaosfm.train import (
    NonFiniteError,
    TrainConfig,
    latest_checkpoint,
    learning_rate_schedule,
    train,
)

from ._toy import toy_batches, toy_loss, toy_model

CONFIG = TrainConfig(
    steps=10, batch_size=8, learning_rate=0.3, warmup_steps=2, checkpoint_every=4, log_every=1, seed=5
)


def _run(run_dir, config=CONFIG, **kw):
    batches = kw.pop("batches", toy_batches())
    return train(toy_model(), toy_loss, batches, config, run_dir, **kw)


def test_schedule_warms_up_then_decays_to_a_ten_thousandth():
    config = TrainConfig(steps=100, learning_rate=1e-3, warmup_steps=10)
    schedule = learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(55)) == pytest.approx(0.5 * (1e-3 + 1e-7), rel=1e-3)
    assert float(schedule(100)) == pytest.approx(1e-7, rel=1e-3)


def test_loop_logs_every_step_and_checkpoints(tmp_path):
    result = _run(tmp_path, tokens_per_step=8)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 11))
    assert {"loss", "grad_norm", "lr", "fit", "tokens_per_s", "elapsed_s"} <= set(lines[0])
    assert np.mean([x["fit"] for x in lines[-3:]]) < 0.5 * np.mean([x["fit"] for x in lines[:3]])
    assert result.step == 10 and result.checkpoint.name == "step_00000010"
    with pytest.raises(ArtifactError, match="already holds checkpoints"):
        _run(tmp_path)  # without resume, an old run is never overwritten


def test_nan_guard_stops_names_step_and_tensor_and_keeps_the_good_checkpoint(tmp_path):
    # The batch of step index 5 (the 6th update) makes v's gradient NaN while the loss is finite.
    with pytest.raises(NonFiniteError, match=r"step 6: non-finite values in gradient of v") as caught:
        _run(tmp_path, batches=toy_batches(poison_step=5))
    assert caught.value.step == 6 and caught.value.tensor == "gradient of v"
    assert caught.value.checkpoint.name == "step_00000004"
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    last = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert last == {"step": 6, "event": "non_finite", "tensor": "gradient of v"}


def test_ctrl_c_checkpoints_and_resume_is_bit_identical(tmp_path):
    def interrupt_at_step_3(step, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "interrupted", on_step=interrupt_at_step_3)
    assert latest_checkpoint(tmp_path / "interrupted").name == "step_00000003"
    resumed = _run(tmp_path / "interrupted", resume=True)
    assert resumed.resumed_from == 3
    straight = _run(tmp_path / "straight")
    for a, b in zip(jax.tree_util.tree_leaves(resumed.model), jax.tree_util.tree_leaves(straight.model)):
        np.testing.assert_array_equal(a, b)
    steps = [
        json.loads(x).get("step") for x in (tmp_path / "interrupted" / "log.jsonl").read_text().splitlines()
    ]
    assert steps[:3] == [1, 2, 3] and steps[-1] == 10


def test_resuming_from_a_corrupted_checkpoint_names_the_file(tmp_path):
    _run(tmp_path, TrainConfig(**{**CONFIG.model_dump(), "steps": 4}))
    damaged = latest_checkpoint(tmp_path) / "opt_state.eqx"
    damaged.write_bytes(damaged.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match=rf"{damaged}: damaged"):
        _run(tmp_path, resume=True)


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_QUIET", "0")
    config = TrainConfig(**{**CONFIG.model_dump(), "steps": 8})
    _run(tmp_path / "damaged", config)
    newest = latest_checkpoint(tmp_path / "damaged")
    assert newest.name == "step_00000008"
    model_file = newest / "model.eqx"
    model_file.write_bytes(model_file.read_bytes()[:-3] + b"xyz")
    capsys.readouterr()
    resumed = _run(tmp_path / "damaged", config, resume=True)
    assert resumed.resumed_from == 4
    said = capsys.readouterr().err
    assert f"skipping checkpoint step_00000008: {model_file}: damaged" in said
    assert "from step 4 (step_00000004)" in said
    # Steps 5-8 are done again, so the run ends where an undamaged run ends.
    straight = _run(tmp_path / "straight", config)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.model), jax.tree_util.tree_leaves(straight.model)):
        np.testing.assert_array_equal(a, b)
