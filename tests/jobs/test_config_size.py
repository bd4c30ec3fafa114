"""`chaosfm config size` (``jobs.config_size``): the written YAML loads through the train config, the
model it builds has the counted parameters, bad input exits 2 naming the value, and a tiny generated
config trains."""

import json

import jax
import pytest
import yaml

from chaosfm.cli import main
from chaosfm.jobs import config_size
from chaosfm.jobs import train as train_job
from chaosfm.models import build_model, count_params
from chaosfm.train import abstract_param_count


def test_yaml_round_trips_through_the_train_config(tmp_path):
    out = tmp_path / "sized.yaml"
    result = config_size.run(config_size.read(None, {"params": "2M", "model": "gpt", "device_kind": "v5e",
                                                     "devices": 2, "out": str(out)}))
    loaded = train_job.read(out)  # the reader of `chaosfm train --config`
    assert loaded.sections() == result["config"] == yaml.safe_load(out.read_text())
    run_config = loaded.run_config(1024)  # the FSQ tokenizer's default vocabulary
    model_config = run_config.model.to_model_config()
    assert model_config.d_model % 128 == 0  # a TPU kind
    plan = result["plan"]
    assert plan["params"] == abstract_param_count(model_config) == count_params(build_model(model_config,
                                                                                            key=jax.random.key(0)))
    assert plan["tokens"] == 20 * plan["params"]
    assert run_config.train.steps == plan["steps"] and run_config.train.devices == 2
    assert run_config.train.batch_size * model_config.context_length == plan["batch_tokens"]
    assert loaded.tokenizer.kind == "fsq" and list(loaded.data.names) == ["sp500"]


def test_size_presets_and_mamba(tmp_path):
    result = config_size.run(config_size.read(None, {"size": "s", "model": "mamba", "device_kind": "h100",
                                                     "tokens": "3B"}))
    plan = result["plan"]
    assert plan["target_params"] == 125_000_000 and abs(plan["params"] / 125e6 - 1) <= 0.1
    assert plan["tokens"] == 3_000_000_000 and result["out"] is None
    assert result["config"]["model"]["kind"] == "mamba"
    assert train_job.parse_train_run_file(yaml.safe_load(result["yaml"])).run_config(1024)
    quantities = [row["quantity"] for row in result["table"]]
    assert quantities[:2] == ["model", "parameters"] and "time" in quantities


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--params", "0"], "'0'"),
        (["--params", "12Q"], "'12Q'"),
        (["--params", "1M", "--device-kind", "tpu9"], "'tpu9'"),
        (["--params", "1M", "--tokens", "lots"], "'lots'"),
        (["--params", "1M", "--model", "rnn"], "'rnn'"),
        (["--size", "XXL"], "'XXL'"),
        ([], "params, size"),
        (["--params", "1M", "--set", "param=3"], "param"),
    ],
)
def test_bad_input_exits_2_naming_the_value(argv, named, tmp_path, capsys):
    assert main(["config", "size", *argv, "--out", str(tmp_path / "x.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and named in error, error
    assert not (tmp_path / "x.yaml").exists()


def test_params_and_size_are_exclusive(capsys):
    assert main(["config", "size", "--params", "1M", "--size", "S"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_prints_the_yaml_without_out_and_measures_the_cpu(capsys):
    assert main(["config", "size", "--params", "300K", "--tokenizer", "bins"]) == 0
    printed = capsys.readouterr().out
    text = printed[printed.index("# gpt,"):]
    sections = yaml.safe_load(text)
    assert sections["model"]["vocab_size"] == 4096 and sections["model"]["dtype"] == "float32"
    assert "FLOP/s per cpu" in printed


@pytest.mark.slow  # ~20 s of CPU time: fits the bins tokenizer, compiles, trains, scores held-out codes
def test_a_tiny_generated_config_trains_two_steps(tmp_path, capsys):
    path, run = tmp_path / "tiny.yaml", tmp_path / "run"
    assert main(["config", "size", "--params", "20K", "--data", "lorenz63", "--tokenizer", "bins",
                 "--device-kind", "a100", "--out", str(path)]) == 0
    written = yaml.safe_load(path.read_text())
    assert written["model"]["d_model"] == 64 and written["model"]["context_length"] == 64
    # The smallest model: 2 V d for embedding and head plus one layer of 12 d^2.
    assert main(["train", "--config", str(path), "--out", str(run), "--set", "train.steps=2",
                 "--set", "train.batch_size=4", "--set", "data.options.length=600",
                 "--set", "model.dtype=float32"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["params"] == 2 * 4096 * 64 + 12 * 64 * 64
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 2
