"""Every job that trains honours ``train.devices``: data parallel over a mesh gives the one-device
result (JEPA pretraining here, the code models in tests/train/test_mesh.py), and every training job
refuses a device count that does not fit before it trains."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.jobs import multitask, pretrain, stage, train
from chaosfm.train import data_mesh

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import equinox as eqx
    from chaosfm.data import load
    from chaosfm.jobs import pretrain
    from chaosfm.train import load_pretrained

    assert len(jax.devices()) == 2, jax.devices()
    root = sys.argv[1]
    frame = load("sp500")
    frame = frame[(frame["timestamp"] >= "2004-01-01") & (frame["timestamp"] <= "2006-12-31")].reset_index(drop=True)
    leaves = []
    for devices in (None, 2):
        config = pretrain.PretrainConfig.model_validate({
            "data": {"names": ["sp500"], "cutoff": "2006-06-30"},
            "model": {"context_length": 16, "d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "d_embed": 8,
                      "d_pred": 8, "min_future": 4, "max_future": 8, "min_span": 2, "max_span": 4},
            "train": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 3, "devices": devices},
            "out": f"{root}/pretrain-{devices}",
        })
        pretrain.run(config, frame=frame)
        model, _, _ = load_pretrained(f"{root}/pretrain-{devices}")
        leaves.append(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
    worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(*leaves))
    scale = max(float(np.max(np.abs(np.asarray(a)))) for a in leaves[0])
    print(json.dumps({"worst": worst, "scale": scale}))
    """
)


@pytest.mark.slow
def test_jepa_pretraining_over_two_devices_matches_one_device(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "CHAOSFM_PROGRESS": "0",
        "CHAOSFM_QUIET": "1",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    process = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env, capture_output=True,
                             timeout=900)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    report = json.loads(process.stdout.decode().strip().splitlines()[-1])
    # The same arithmetic but for the order of the batch reduction (the VICReg statistics span
    # the whole batch): float32 rounding only.
    assert report["worst"] <= 1e-4 * max(1.0, report["scale"]), report


def test_the_mesh_builder_refuses_what_does_not_fit():
    assert data_mesh(None, 4) is None
    assert data_mesh(1, 4).shape == {"data": 1}
    with pytest.raises(ConfigError, match=r"train.devices: 96 asked for, \d+ available"):
        data_mesh(96, 96)
    with pytest.raises(ConfigError, match="train.batch_size: 3 does not split over train.devices=2"):
        data_mesh(2, 3)


def _slice(tmp_path):
    frame = load("sp500")
    part = frame[(frame["timestamp"] >= "2004-01-01") & (frame["timestamp"] <= "2006-12-31")]
    path = tmp_path / "sp500.csv"
    part.drop(columns="asset").to_csv(path, index=False)
    return str(path)


def test_every_training_job_refuses_too_many_devices_before_it_trains(tmp_path):
    data = _slice(tmp_path)
    devices = {"devices": 96, "batch_size": 96, "steps": 1}
    jobs = {
        "train": lambda out: train.run(train.read(None, {
            "data.names": [data], "tokenizer.kind": "bins", "tokenizer.options": {"vocab_size": 16},
            "model": {"kind": "gpt", "context_length": 8, "d_model": 16, "n_layers": 1}, "train": devices,
            "out": out})),
        "stage": lambda out: stage.run(stage.read(None, {
            "stage": "pretrain", "data.names": [data], "tokenizer.kind": "bins", "tokenizer.options": {"vocab_size": 16},
            "model": {"kind": "gpt", "context_length": 8, "d_model": 16, "n_layers": 1}, "train": devices,
            "out": out})),
        "pretrain": lambda out: pretrain.run(pretrain.read(None, {
            "data.names": [data], "model": {"context_length": 32}, "train": devices, "out": out})),
        "multitask": lambda out: multitask.run(multitask.read(None, {
            "data": data, "train.devices": 96, "train.batch_size": 96, "out": out})),
    }
    for name, job in jobs.items():
        out = tmp_path / name
        with pytest.raises(ConfigError, match=r"train.devices: 96 asked for, \d+ available"):
            job(str(out))
        assert not (out / "model.eqx").exists() and not (out / "checkpoints").exists(), name
