"""`chaosfm shard` (``jobs.shard``) and `chaosfm train --shards`: the folder and its index, no
overwrite, a damaged shard named, a config that does not fit the shards refused, the CLI."""

import json
import shutil

import numpy as np
import pytest
import yaml

from chaosfm._artifacts import ArtifactError, sha256
from chaosfm._config import ConfigError
from chaosfm.cli import main
from chaosfm.jobs import shard as shard_job
from chaosfm.jobs import train as train_job
from chaosfm.tokenizers import load_tokenizer
from chaosfm.train import ShardSet, tokenizer_sha256

pytestmark = pytest.mark.slow  # the module's data and tokenizer fit take ~30 s on a 2-core machine


def lorenz_config(**train) -> dict:
    return {
        "data": {"names": "lorenz63", "options": {"length": 600}, "embargo": 10},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "model": {"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1,
                  "val_fraction": 0.1, **train},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("shard") / "windows"
    index = shard_job.run(shard_job.ShardRunFile.model_validate({**lorenz_config(), "out": str(out), "num_shards": 2}))
    return out, index


def test_the_folder_and_its_index(written):
    out, index = written
    assert json.loads((out / "index.json").read_text()) == index
    assert sorted(p.name for p in out.iterdir()) == [
        "codes.json", "heldout.array_record", "index.json", "tokenizer",
        "windows-00000-of-00002.array_record", "windows-00001-of-00002.array_record"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the temporary folder is gone
    assert index["window"] == 25 and index["seed"] == 0 and index["vocab_size"] == 34
    assert [(part["name"], part["dtype"], part["shape"]) for part in index["layout"]] == [
        ("codes", "<i4", [25]), ("exo", "<f4", [25])]
    assert sum(part["records"] for part in index["shards"]) == index["windows"]
    for part in index["shards"]:
        assert sha256(out / part["file"]) == part["sha256"]
    assert index["heldout"]["records"] == 4  # the batch size
    assert index["tokenizer"]["sha256"] == tokenizer_sha256(out / "tokenizer")
    assert index["tokenizer"]["config"]["kind"] == "bins"
    assert index["chaosfm_version"] and index["versions"]["chaosfm"] == index["chaosfm_version"]
    # The windows are what chaosfm train would draw from: the same fence, tokenizer and streams.
    tokenizer, data, _, _ = train_job.fenced_codes(train_job.parse_train_run_file(lorenz_config()))
    assert index["trained_through"] == {a: float(t) for a, t in data.trained_through.items()}
    assert index["trained_through"] == load_tokenizer(out / "tokenizer").trained_through
    lengths = {a: int(c.size) for a, c in data.train.items()}
    assert index["data"]["stream_lengths"] == lengths
    held = int(round(0.1 * next(iter(lengths.values()))))
    assert index["windows"] == sum(lengths.values()) - held - 24 * len(lengths)  # every start of every stream


def test_an_existing_folder_is_never_overwritten(written):
    out, index = written
    before = sha256(out / "index.json")
    with pytest.raises(ConfigError, match="already exists"):
        shard_job.run(shard_job.ShardRunFile.model_validate({**lorenz_config(), "out": str(out)}))
    assert sha256(out / "index.json") == before


def test_a_damaged_shard_or_tokenizer_is_named(written, tmp_path):
    out, _ = written
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "windows-00001-of-00002.array_record"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x01
    target.write_bytes(bytes(data))
    config = train_job.parse_train_run_file({**lorenz_config(), "out": str(tmp_path / "run")})
    config.data.shards = str(copy)
    with pytest.raises(ArtifactError, match="windows-00001-of-00002.array_record: damaged"):
        train_job.run(config)
    shutil.copy(out / target.name, target)
    edges = copy / "tokenizer" / "tokenizer.json"
    edges.write_text(edges.read_text().replace("34", "35", 1))
    with pytest.raises(ArtifactError, match="tokenizer: damaged"):
        train_job.run(config)
    assert not (tmp_path / "run" / "model.eqx").exists()


@pytest.mark.parametrize("change, message", [
    (dict(model={"context_length": 16}), r"model\.context_length: .* is 17, the shards' is 25"),
    (dict(train={"seed": 1}), r"train\.seed: the config's seed is 1, the shards were written with seed 0"),
    (dict(train={"val_fraction": 0.2}), r"train\.val_fraction: .* is 0\.2, the shards' is 0\.1"),
    (dict(model={"vocab_size": 99}), r"model\.vocab_size: 99 .* 34 codes"),
])
def test_a_config_that_does_not_fit_the_shards_is_refused(written, tmp_path, change, message):
    out, _ = written
    config = lorenz_config(**change.get("train", {}))
    config["model"].update(change.get("model", {}))
    config["data"]["shards"] = str(out)
    with pytest.raises(ConfigError, match=message):
        train_job.run(train_job.parse_train_run_file({**config, "out": str(tmp_path / "run")}))


def test_the_cli_shards_then_trains_from_the_shards(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(lorenz_config(steps=2)))
    assert main(["shard", "--config", str(config), "--out", str(tmp_path / "sh"), "--num-shards", "3"]) == 0
    # The console wraps long lines (a long temporary path moves the break): compare word by word.
    assert "chaosfm train --config FILE --shards" in " ".join(capsys.readouterr().out.split())
    assert len(ShardSet(tmp_path / "sh").index["shards"]) == 3
    assert main(["train", "--config", str(config), "--shards", str(tmp_path / "sh"), "--out", str(tmp_path / "run")]) == 0
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["trained_through"] == ShardSet(tmp_path / "sh").index["trained_through"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and np.isfinite(metrics["final_train_loss"]) and metrics["shards"] == str(tmp_path / "sh")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["shards"] == str(tmp_path / "sh")
    assert main(["shard", "--config", str(config), "--out", str(tmp_path / "sh")]) == 2
    assert "already exists" in capsys.readouterr().err
