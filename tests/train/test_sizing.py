"""Sized configs (``train/_sizing.py``): parameter counts against hand counts, the token, batch and
learning-rate rules, TPU-friendly shapes, and the memory and FLOP formulas on hand-worked cases."""

import math

import jax
import pytest

from chaosfm._config import ConfigError
from chaosfm.models import GPTConfig, MambaConfig, build_model, count_params
from chaosfm.train import (
    SIZE_PRESETS,
    TPU_KINDS,
    abstract_param_count,
    chinchilla_tokens,
    choose_shape,
    context_length_for,
    gpt_param_formula,
    learning_rate_for,
    mamba_param_formula,
    memory_estimate,
    parse_count,
    plan_size,
    training_flops,
)


def test_gpt_count_matches_a_hand_count_and_the_built_model():
    # V=10, d=64, L=2, one head of 64: embedding 10*64 and head 64*10; per layer Q, K, V, O are
    # 64x64 each (16384) and the MLP 64x256 + 256x64 (32768): 49152; no biases, no norm weights.
    config = GPTConfig(vocab_size=10, context_length=16, d_model=64, n_layers=2, n_heads=1, n_kv_heads=1)
    hand = 640 + 640 + 2 * (4 * 64 * 64 + 2 * 64 * 256)
    assert hand == 99584
    assert abstract_param_count(config) == hand
    assert gpt_param_formula(64, 2, 10) == hand
    assert count_params(build_model(config, key=jax.random.key(0))) == hand


def test_grouped_query_gpt_and_mamba_counts_match_hand_counts():
    # GQA: 4 query heads of 16, 2 key/value heads: K and V are 64x32 each.
    gqa = GPTConfig(vocab_size=10, context_length=16, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2)
    assert abstract_param_count(gqa) == 1280 + (2 * 64 * 64 + 2 * 64 * 32 + 2 * 64 * 256) == 46336
    assert count_params(build_model(gqa, key=jax.random.key(0))) == 46336
    # Mamba, d=64, I=128, N=16, P=32 so H=4: in-projection 64 x (2*128 + 2*16 + 4) = 18688, conv
    # 4 x (128 + 32) = 640, dt bias + A + skip 12, out-projection 128x64 = 8192; one layer.
    mamba = MambaConfig(vocab_size=10, context_length=16, d_model=64, n_layers=1, d_state=16, head_dim=32)
    hand = 1280 + 18688 + 640 + 12 + 8192
    assert abstract_param_count(mamba) == hand == 28812
    assert mamba_param_formula(64, 1, 10, d_state=16, head_dim=32) == hand
    assert count_params(build_model(mamba, key=jax.random.key(0))) == hand


def test_abstract_count_allocates_no_weights_for_a_billion_parameter_model():
    config = GPTConfig(vocab_size=1024, context_length=64, d_model=2048, n_layers=24, n_heads=16, n_kv_heads=16)
    # 12 L d^2 + 2 V d; drawing these weights would take seconds and 4.8 GB.
    assert abstract_param_count(config) == 12 * 24 * 2048**2 + 2 * 1024 * 2048 == 1_212_153_856


@pytest.mark.parametrize("text, expected", [("150M", 150_000_000), ("1.3B", 1_300_000_000), ("3e9", 3_000_000_000),
                                            ("20k", 20_000), (" 7 ", 7), (2048, 2048), ("2T", 2 * 10**12)])
def test_parse_count(text, expected):
    assert parse_count(text, "params") == expected


@pytest.mark.parametrize("text", ["12Q", "0", "-5M", "M", "", "1e400", True])
def test_parse_count_refuses_bad_counts_naming_the_value(text):
    with pytest.raises(ConfigError, match=r"params: .*" + (repr(text).replace("+", r"\+") if text != "" else "''")):
        parse_count(text, "params")


def test_chinchilla_default_is_twenty_tokens_per_exact_parameter():
    plan = plan_size("gpt", 3_000_000, 1024, device_kind="v5p")
    assert plan.tokens == chinchilla_tokens(plan.params) == 20 * plan.params
    given = plan_size("gpt", 3_000_000, 1024, tokens=123_456_789, device_kind="v5p")
    assert given.tokens == 123_456_789
    # Whole steps cover the tokens, with less than one batch left over.
    assert given.steps * given.batch_tokens == given.trained_tokens
    assert 0 <= given.trained_tokens - given.tokens < given.batch_tokens


def test_batch_learning_rate_and_warmup_rules():
    plan = plan_size("gpt", 50_000_000, 1024, device_kind="h100", devices=4)
    d, s = plan.model["d_model"], plan.model["context_length"]
    assert plan.train["learning_rate"] == pytest.approx(3e-3 * 128 / d, rel=1e-3)
    assert learning_rate_for(768) == pytest.approx(5e-4) and learning_rate_for(2048) == pytest.approx(1.875e-4)
    # batch = devices * 2^k windows, k the rounded log2 of 0.292 C^0.3271 / (s * devices) at C = 6 N D.
    windows = 0.292 * (6.0 * plan.params * plan.tokens) ** 0.3271 / (s * 4)
    assert plan.train["batch_size"] == 4 * 2 ** round(math.log2(windows))
    assert plan.train["devices"] == 4 and plan.train["batch_size"] % 4 == 0
    assert plan.train["warmup_steps"] == round(0.02 * plan.steps)
    assert plan.model["dtype"] == "bfloat16"


def test_context_rule():
    assert [context_length_for(d) for d in (64, 128, 384, 768, 1024, 1536, 4096)] == [64, 128, 512, 1024, 1024,
                                                                                    2048, 2048]


@pytest.mark.parametrize("kind", ["gpt", "mamba"])
@pytest.mark.parametrize("device", TPU_KINDS)
def test_tpu_shapes_are_multiples_of_128(kind, device):
    for budget in (2_000_000, 30_000_000, 150_000_000, 700_000_000):
        plan = plan_size(kind, budget, 1000, device_kind=device)
        model = plan.model
        assert model["d_model"] % 128 == 0, (budget, model)
        if kind == "gpt":
            head_dim = model["d_model"] // model["n_heads"]
            assert head_dim in (64, 128) and model["n_heads"] * head_dim % 128 == 0
        else:
            assert model["head_dim"] == 64 and (model["expand"] * model["d_model"]) % 128 == 0


@pytest.mark.parametrize("kind", ["gpt", "mamba"])
def test_presets_land_within_ten_percent_and_head_dims_are_64_or_128(kind):
    for name, budget in SIZE_PRESETS.items():
        shape = choose_shape(kind, budget, 1024)
        formula = gpt_param_formula if kind == "gpt" else mamba_param_formula
        count = formula(shape["d_model"], shape["n_layers"], 1024)
        assert abs(count / budget - 1) <= 0.10, (name, shape, count)
        if kind == "gpt":
            assert shape["d_model"] // shape["n_heads"] in (64, 128)
            assert shape["d_model"] % shape["n_heads"] == 0


def test_plan_count_is_the_built_model_count():
    plan = plan_size("mamba", 400_000, 64, device_kind="a100")
    config = MambaConfig(**{k: v for k, v in plan.model.items() if k != "kind"})
    assert plan.params == count_params(build_model(config, key=jax.random.key(1)))


def test_memory_formula_on_a_hand_worked_case():
    # GPT d=64, L=2, one head, s=64, V=16, float32 (p=4); batch 8 over 2 devices: 4 windows each.
    model = {"d_model": 64, "n_layers": 2, "n_heads": 1, "context_length": 64, "vocab_size": 16, "dtype": "float32"}
    memory = memory_estimate("gpt", model, 1000, batch_size=8, devices=2)
    layer = 4 * 64 * 4 * (16 * 64 + 1 * 64)  # p s b (16 d + a s) = 1,114,112 bytes
    outside = 4 * 64 * 4 * 16 + 2 * 4 * 64 * 4 * 64  # float32 logits + head input: 147,456
    assert memory.activations == 2 * layer + outside == 2_375_680
    assert memory.activations_remat == 2 * 4 * 64 * 4 * 64 + layer + outside == 1_392_640
    assert (memory.params, memory.gradients, memory.optimizer) == (4000, 4000, 8000)
    assert memory.states == 16_000 and memory.states_sharded == 8_000
    assert memory.total(remat=True, sharded=True) == 8_000 + 1_392_640
    # bfloat16 halves the activation terms but the float32 logits.
    half = memory_estimate("gpt", {**model, "dtype": "bfloat16"}, 1000, batch_size=8, devices=2)
    assert half.activations == 2 * layer / 2 + 4 * 64 * 4 * 16 + 2 * 2 * 64 * 4 * 64


def test_flops_on_a_hand_worked_case():
    model = {"d_model": 64, "n_layers": 2, "context_length": 32}
    flops = training_flops("gpt", model, 100_000, 1e6)
    assert flops["dense"] == 6 * 100_000 * 1e6
    assert flops["sequence"] == 12 * 2 * 32 * 64 * 1e6  # 12 L s d per token
    assert flops["total"] == flops["dense"] + flops["sequence"]
    # Mamba, d=64 (I=128, P=32 so H=4), N=16, chunk min(64, s=32)=32: 3 (2 Q N H + 2 Q I + 4 I N) per layer.
    mamba = {"d_model": 64, "n_layers": 1, "context_length": 32, "d_state": 16, "head_dim": 32, "expand": 2}
    per_token = 3 * (2 * 32 * 16 * 4 + 2 * 32 * 128 + 4 * 128 * 16)
    assert training_flops("mamba", mamba, 1, 10)["sequence"] == per_token * 10


def test_time_is_flops_over_devices_peak_and_mfu():
    plan = plan_size("gpt", 10_000_000, 1024, device_kind="v5p", devices=8, mfu=0.5)
    assert plan.peak_flops == 459e12
    assert plan.seconds == pytest.approx(plan.flops["total"] / (8 * 459e12 * 0.5))
    with pytest.raises(ConfigError, match="device_kind: 'tpu9'"):
        plan_size("gpt", 10_000_000, 1024, device_kind="tpu9")
    with pytest.raises(ConfigError, match="cpu"):
        plan_size("gpt", 10_000_000, 1024, device_kind="cpu")  # no public peak: measure it
