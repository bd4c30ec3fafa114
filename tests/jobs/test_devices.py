"""Every job that trains honours ``train.devices``: it builds the data-parallel mesh and hands it
to the training loop (whose mesh gives the one-device result: tests/train/test_mesh.py), and it
refuses a device count that does not fit before anything trains."""

import inspect

import pytest

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.jobs import multitask, pretrain, stage, train
from chaosfm.train import data_mesh, fit_code_model, training_mesh


def test_the_mesh_builder_refuses_what_does_not_fit():
    assert data_mesh(None, 4) is None
    assert data_mesh(1, 4).shape == {"data": 1}
    with pytest.raises(ConfigError, match=r"train.devices: 96 asked for, \d+ available"):
        data_mesh(96, 96)
    with pytest.raises(ConfigError, match="train.batch_size: 3 does not split over train.devices=2"):
        data_mesh(2, 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    frame = load("sp500")
    part = frame[(frame["timestamp"] >= "2004-01-01") & (frame["timestamp"] <= "2006-12-31")]
    path = tmp_path_factory.mktemp("devices") / "sp500.csv"
    part.drop(columns="asset").to_csv(path, index=False)
    return str(path)


def _jobs(data, loop):
    model = {"kind": "gpt", "context_length": 8, "d_model": 16, "n_layers": 1}
    bins = {"tokenizer.kind": "bins", "tokenizer.options": {"vocab_size": 16}}
    return {
        "train": (train, lambda out: train.read(None, {"data.names": [data], **bins, "model": model, "train": loop,
                                                         "out": out})),
        "stage": (stage, lambda out: stage.read(None, {"stage": "pretrain", "data.names": [data], **bins,
                                                         "model": model, "train": loop, "out": out})),
        "pretrain": (pretrain, lambda out: pretrain.read(None, {"data.names": [data], "model": {"context_length": 32},
                                                                "train": loop, "out": out})),
        "multitask": (multitask, lambda out: multitask.read(None, {
            "data": data, "out": out, "causal_checks": 0, **{f"train.{k}": v for k, v in loop.items()}})),
    }


RUNS = {"train": train.run, "stage": stage.run, "pretrain": pretrain.run, "multitask": multitask.run}
_CODE_LOOP = inspect.getmodule(fit_code_model)  # the train job trains a code model through fit_code_model
LOOPS = {"train": _CODE_LOOP, "stage": _CODE_LOOP, "pretrain": pretrain, "multitask": multitask}
"""Job -> the module whose ``train`` (the loop) it calls: a stage from nothing is the train job's run."""


def test_every_training_job_refuses_too_many_devices_before_it_trains(data, tmp_path):
    for name, (_, read) in _jobs(data, {"devices": 96, "batch_size": 96, "steps": 1}).items():
        out = tmp_path / name
        with pytest.raises(ConfigError, match=r"train.devices: 96 asked for, \d+ available"):
            RUNS[name](read(str(out)))
        assert not (out / "model.eqx").exists() and not (out / "checkpoints").exists(), name


class _Stop(Exception):
    pass


def test_every_training_job_hands_its_mesh_to_the_loop(data, tmp_path, monkeypatch):
    seen = {}
    for name, (_, read) in _jobs(data, {"devices": 1, "batch_size": 4, "steps": 1}).items():

        def stand_in(model, loss_fn, batches, config, out, *, mesh=None, name=name, **kwargs):
            seen[name] = (mesh, config.devices)
            raise _Stop

        with monkeypatch.context() as patch:
            patch.setattr(LOOPS[name], "train", stand_in)
            with pytest.raises(_Stop):
                RUNS[name](read(str(tmp_path / name)))
    assert set(seen) == set(RUNS)
    for name, (mesh, devices) in seen.items():
        assert devices == 1 and mesh is not None and mesh.shape == {"data": 1}, name


def test_every_training_job_reads_train_mesh_and_refuses_one_that_does_not_fit(data, tmp_path, monkeypatch):
    """``train.mesh`` reaches the loop through every job (which lays the job's devices out as it
    says), and a mesh past the devices or off ``train.devices`` stops the job before it trains."""
    seen = {}
    for name, (_, read) in _jobs(data, {"mesh": {"data": 1, "fsdp": 1}, "batch_size": 4, "steps": 1}).items():

        def stand_in(model, loss_fn, batches, config, out, *, mesh=None, name=name, **kwargs):
            seen[name] = training_mesh(config, mesh, state_bytes=0)
            raise _Stop

        with monkeypatch.context() as patch:
            patch.setattr(LOOPS[name], "train", stand_in)
            with pytest.raises(_Stop):
                RUNS[name](read(str(tmp_path / name)))
    assert set(seen) == set(RUNS)
    for name, mesh in seen.items():
        assert mesh.shape == {"data": 1, "fsdp": 1}, name
    too_big = {"mesh": {"data": 48, "fsdp": 2}, "batch_size": 96, "steps": 1}
    off_count = {"mesh": {"data": 1, "fsdp": 1}, "devices": 2, "batch_size": 4, "steps": 1}
    for loop, message in ((too_big, r"train.devices: 96 asked for, \d+ available \(with train.mesh"),
                          (off_count, r"train.mesh: data 1 × fsdp 1 = 1 devices, but train.devices is 2")):
        for name, (_, read) in _jobs(data, loop).items():
            out = tmp_path / f"refused-{name}"
            with pytest.raises(ConfigError, match=message):
                RUNS[name](read(str(out)))
            assert not (out / "model.eqx").exists() and not (out / "checkpoints").exists(), name
