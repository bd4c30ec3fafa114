"""The stage objects of ``chaosfm.train.STAGES``: windows, train defaults, learning-rate scales, parents,
RL's checks and metrics, and the loss each one hands the loop."""

import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.train import (
    RL,
    SFT,
    STAGES,
    Midtrain,
    Pretrain,
    StageSettings,
)


def test_the_four_stages_in_training_order():
    assert list(STAGES) == ["pretrain", "midtrain", "sft", "rl"]
    assert [type(s) for s in STAGES.values()] == [Pretrain, Midtrain, SFT, RL]
    assert all(stage.name == name for name, stage in STAGES.items())


def test_parents_and_who_may_start_from_nothing():
    assert STAGES["pretrain"].parents == (None, "train", "pretrain")
    assert STAGES["midtrain"].parents == ("pretrain",)
    assert STAGES["sft"].parents == ("midtrain", "pretrain")
    assert STAGES["rl"].parents == ("sft",)
    assert [name for name, stage in STAGES.items() if stage.from_scratch] == ["pretrain"]
    assert [name for name, stage in STAGES.items() if stage.single_asset] == ["midtrain"]


def test_learning_rate_scales():
    # A stage's default learning rate is its parent's times this.
    assert {name: stage.lr_scale for name, stage in STAGES.items()} == {
        "pretrain": 1.0, "midtrain": 0.1, "sft": 0.5, "rl": 0.1
    }


@pytest.mark.parametrize("name", ["pretrain", "midtrain"])
def test_next_code_stages_read_whole_contexts_per_segment(name):
    stage = STAGES[name]
    settings = StageSettings(horizon=6, context_len=10)  # ignored: next-code windows are the model's
    assert stage.window(24, 1, settings) == (25, None)
    assert stage.window(24, 3, settings) == (73, None)  # TBPTT: segments * context + the last target


@pytest.mark.parametrize("name", ["sft", "rl"])
def test_horizon_stages_read_a_context_then_the_horizon(name):
    stage = STAGES[name]
    assert stage.window(24, 1, StageSettings(horizon=6)) == (24, 18)  # default context: the model's minus H
    assert stage.window(24, 1, StageSettings(horizon=6, context_len=10)) == (16, 10)
    with pytest.raises(ConfigError, match="horizon: 24 leaves no context"):
        stage.window(24, 1, StageSettings(horizon=24))
    assert stage.window(24, 1, StageSettings(horizon=24, context_len=5)) == (29, 5)


def test_train_defaults():
    assert STAGES["pretrain"].train_defaults({"tbptt_segments": 4}) == {}
    assert STAGES["midtrain"].train_defaults({}) == {}
    assert STAGES["sft"].train_defaults({}) == {"tbptt_segments": 1}
    assert STAGES["sft"].train_defaults({"tbptt_segments": 1, "steps": 3}) == {"tbptt_segments": 1}
    # RL's reward curve has a point per step unless the config's train.log_every says otherwise
    # (the job lays the config's keys over these defaults).
    assert STAGES["rl"].train_defaults({}) == {"tbptt_segments": 1, "log_every": 1}
    assert STAGES["rl"].train_defaults({"log_every": 5}) == {"tbptt_segments": 1, "log_every": 1}


@pytest.mark.parametrize("name", ["sft", "rl"])
def test_horizon_stages_refuse_truncated_bptt(name):
    with pytest.raises(ConfigError, match=f"train.tbptt_segments: {name} reads whole windows; leave it at 1"):
        STAGES[name].train_defaults({"tbptt_segments": 2})


def test_rl_needs_two_samples_per_batch_for_its_baseline():
    rl = STAGES["rl"]
    with pytest.raises(ConfigError, match=r"samples: the batch-mean baseline needs batch_size \* samples >= 2"):
        rl.check(StageSettings(samples=1), batch_size=1)
    rl.check(StageSettings(samples=2), batch_size=1)
    rl.check(StageSettings(samples=1), batch_size=2)
    for name in ("pretrain", "midtrain", "sft"):
        STAGES[name].check(StageSettings(samples=1), batch_size=1)  # no such rule


def test_only_rl_with_a_return_reward_needs_returns():
    assert STAGES["rl"].needs_returns(StageSettings(reward="return_mse"))
    assert not STAGES["rl"].needs_returns(StageSettings(reward="token_accuracy"))
    for name in ("pretrain", "midtrain", "sft"):
        assert not STAGES[name].needs_returns(StageSettings(reward="return_mse"))


def test_rl_metrics_summarise_the_logged_rewards():
    rewards = [0.1 * i for i in range(1, 16)]  # 15 logged rewards, among entries without one
    history = []
    for step, reward in enumerate(rewards, start=1):
        history.append({"step": step, "loss": 1.0, "reward_mean": reward, "kl": 0.0})
        history.append({"step": step, "loss": 1.0, "eval": True})
    summary = STAGES["rl"].metrics(history, StageSettings(reward="return_mse"))["reward"]
    assert summary["kind"] == "return_mse" and summary["logged_steps"] == 15
    assert summary["first"] == pytest.approx(0.1) and summary["last"] == pytest.approx(1.5)
    assert summary["first_10_mean"] == pytest.approx(np.mean(rewards[:10]))
    assert summary["last_10_mean"] == pytest.approx(np.mean(rewards[-10:]))
    empty = STAGES["rl"].metrics([{"step": 1, "loss": 2.0}], StageSettings())["reward"]
    assert empty == {"kind": "token_accuracy", "logged_steps": 0, "first": None, "last": None,
                     "first_10_mean": None, "last_10_mean": None}
    for name in ("pretrain", "midtrain", "sft"):
        assert STAGES[name].metrics(history, StageSettings()) == {}


def test_each_stage_hands_the_loop_its_objective(monkeypatch):
    # The stage's loss is the library's objective with the stage's settings: record the calls.
    from chaosfm.train import _stages

    calls = []

    def recorder(name):
        def loss(model, batch, key, **kwargs):
            calls.append((name, model, batch, key, kwargs))
            return name

        return loss

    for name in ("code_loss", "horizon_loss", "rl_loss"):
        monkeypatch.setattr(_stages, name, recorder(name))
    settings = StageSettings(horizon=3, samples=2, kl_coef=0.2, temperature=0.7, reward="return_mse")
    model, batch, key, reference, decode = object(), {"codes": 1}, object(), object(), object()
    expected = {
        "pretrain": ("code_loss", {"segments": 2}),
        "midtrain": ("code_loss", {"segments": 2}),
        "sft": ("horizon_loss", {"horizon": 3}),
        "rl": ("rl_loss", {"reference": reference, "horizon": 3, "samples": 2, "reward": "return_mse",
                           "kl_coef": 0.2, "temperature": 0.7, "decode_returns": decode}),
    }
    for name, (objective, kwargs) in expected.items():
        loss = STAGES[name].loss(settings, reference=reference, segments=2, decode_returns=decode)
        assert loss(model, batch, key) == objective
        assert calls[-1] == (objective, model, batch, key, kwargs), name