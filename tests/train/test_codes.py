"""Training code models end to end: learning, TBPTT, run folders, SIGKILL + resume, damaged files.

The library's code loss, loop, checkpoints and run folders, driven through the one job function that
wires them (``chaosfm.jobs.train.train_code_model``).
"""

import json
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError, verify_run
from chaosfm._config import ConfigError
from chaosfm.models import GPT, GPTConfig, generate
from chaosfm.jobs.train import train_code_model
from chaosfm.train import code_loss, load_run, parse_train_run_config

from ._data import PERIOD, periodic_data, tiny_config, tiny_run_config


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gpt")
    config = tiny_run_config("gpt", steps=80, batch_size=8, checkpoint_every=40, log_every=10)
    return run, train_code_model(config, run, periodic_data())


def test_a_tiny_gpt_learns_a_periodic_code_sequence(gpt_run):
    run, result = gpt_run
    assert result.history[-1]["loss"] < 0.05
    heldout = json.loads((run / "metrics.json").read_text())["heldout"]
    assert heldout["accuracy"] == 1.0 and heldout["perplexity"] < 1.1
    # 8 equally likely-ish codes: unigram perplexity is far above the model's.
    assert heldout["unigram_perplexity"] > 5 and heldout["perplexity_ratio"] < 0.25
    assert heldout["tokens"] == 160  # primed with the training tail, every held-out code is scored


def test_the_run_folder_loads_back_and_generates_the_period(gpt_run):
    run, _ = gpt_run
    meta = verify_run(run)
    assert {"config.yaml", "model_config.json", "model.eqx", "metrics.json", "log.jsonl"} <= set(
        meta["files"]
    )
    model, _ = load_run(run)
    assert isinstance(model, GPT)
    continuation = generate(model, jnp.asarray(PERIOD[:5]), 11, temperature=0.0)
    np.testing.assert_array_equal(continuation, np.tile(PERIOD, 3)[5:16])


def test_a_damaged_run_file_is_named(gpt_run, tmp_path):
    run, _ = gpt_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("meta.json", "model_config.json", "config.yaml", "metrics.json", "log.jsonl", "loss.png", "model.eqx"):
        (copy / name).write_bytes((run / name).read_bytes())
    for path in (run / "checkpoints").rglob("*"):
        target = copy / path.relative_to(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            target.write_bytes(path.read_bytes())
    (copy / "model.eqx").write_bytes((copy / "model.eqx").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match=r"model\.eqx: damaged"):
        load_run(copy)


def test_resuming_with_another_model_config_is_refused(gpt_run):
    run, _ = gpt_run
    config = tiny_config("gpt", steps=80, batch_size=8, checkpoint_every=40, log_every=10)
    config["model"]["d_model"] = 64
    with pytest.raises(ConfigError, match="model.d_model"):
        train_code_model(parse_train_run_config(config), run, periodic_data(), resume=True)


def test_tbptt_gradient_is_the_sum_of_segment_gradients_with_the_state_stopped():
    # A GPT: its key/value memory is the carried state (the Mamba state is model-agnostic here).
    model = GPT(
        GPTConfig(vocab_size=10, context_length=6, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1),
        key=jax.random.key(0),
    )
    model = jax.tree_util.tree_map(lambda x: x + 0.1 if eqx.is_inexact_array(x) else x, model)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 10, (2, 13)), jnp.int32)

    def by_hand(model):
        total, state = 0.0, jax.vmap(lambda _: model.init_state())(jnp.arange(2))
        for segment in range(2):
            window = codes[:, segment * 6 : segment * 6 + 7]
            logits, state = jax.vmap(lambda c, s: model(c, state=s))(
                window[:, :-1], jax.lax.stop_gradient(state)
            )
            total += -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), window[:, 1:, None], -1))
        return total / 24

    @eqx.filter_jit
    def both(model):
        tbptt = eqx.filter_value_and_grad(lambda m: code_loss(m, {"codes": codes}, segments=2)[0])(model)
        return tbptt, eqx.filter_value_and_grad(by_hand)(model)

    (loss, grads), (loss_ref, grads_ref) = both(model)
    assert abs(float(loss) - float(loss_ref)) < 1e-5
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_ref)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_a_tiny_mamba_learns_the_sequence_with_truncated_bptt(tmp_path):
    config = tiny_run_config(
        "mamba", steps=80, batch_size=8, tbptt_segments=2, checkpoint_every=80, log_every=10
    )
    result = train_code_model(config, tmp_path, periodic_data())
    assert result.history[-1]["loss"] < 0.05
    assert result.metrics["heldout"]["accuracy"] == 1.0


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from train._data import periodic_data, tiny_run_config
    from chaosfm.jobs.train import train_code_model

    def die(step, metrics):
        if step == 7:  # after the step-5 checkpoint, before the step-10 one
            os.kill(os.getpid(), signal.SIGKILL)

    train_code_model(tiny_run_config("gpt"), {run!r}, periodic_data(), on_step=die)
    """
)


def test_a_run_killed_with_sigkill_resumes_to_bit_identical_parameters(tmp_path, subprocess_env):
    killed = tmp_path / "killed"
    tests_dir = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = _KILLED_RUN.format(tests=tests_dir, run=str(killed))
    process = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env, capture_output=True, timeout=600
    )
    assert process.returncode == -9, process.stderr.decode()[-2000:]
    assert not (killed / "model.eqx").exists()
    log_steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert log_steps[-1] == 7

    resumed = train_code_model(tiny_run_config("gpt"), killed, periodic_data(), resume=True)
    assert resumed.resumed_from == 5
    train_code_model(tiny_run_config("gpt"), tmp_path / "straight", periodic_data())
    assert (killed / "model.eqx").read_bytes() == (tmp_path / "straight" / "model.eqx").read_bytes()
    log_steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert log_steps == list(range(1, 13))  # the lost steps 6-7 were logged once, after the resume
