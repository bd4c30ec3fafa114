"""The stage objects of ``chaosfm.train.STAGES``: windows, train defaults, learning-rate scales, parents,
RL's checks and metrics, and the loss each one hands the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.models import GPT, GPTConfig
from chaosfm.train import (
    RL,
    SFT,
    STAGES,
    Midtrain,
    Pretrain,
    StageSettings,
    code_loss,
    horizon_loss,
    rl_loss,
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


@pytest.fixture(scope="module")
def gpt():
    return GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1),
               key=jax.random.key(0))


def test_each_stage_hands_the_loop_its_objective(gpt):
    codes = jax.random.randint(jax.random.key(1), (2, 17), 0, 11)
    key = jax.random.key(2)
    settings = StageSettings(horizon=3, samples=2, kl_coef=0.2, temperature=0.7)
    for name in ("pretrain", "midtrain"):
        loss = STAGES[name].loss(settings, reference=None, segments=2, decode_returns=None)
        got, expected = loss(gpt, {"codes": codes}, key)[0], code_loss(gpt, {"codes": codes}, segments=2)[0]
        assert float(got) == pytest.approx(float(expected), rel=1e-6)
    window = codes[:, :8]
    loss = STAGES["sft"].loss(settings, reference=None, segments=1, decode_returns=None)
    assert float(loss(gpt, {"codes": window}, key)[0]) == pytest.approx(
        float(horizon_loss(gpt, {"codes": window}, horizon=3)[0]), rel=1e-6
    )
    reference = jax.tree_util.tree_map(lambda x: x * 1.1 if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating) else x, gpt)
    loss = STAGES["rl"].loss(settings, reference=reference, segments=1, decode_returns=None)
    got, metrics = loss(gpt, {"codes": window}, key)
    expected, _ = rl_loss(gpt, {"codes": window}, key, reference=reference, horizon=3, samples=2,
                          reward="token_accuracy", kl_coef=0.2, temperature=0.7)
    assert float(got) == pytest.approx(float(expected), rel=1e-6) and "reward_mean" in metrics
