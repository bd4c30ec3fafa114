"""Several processes (``train/_distributed.py``): the ``distributed`` config, and ``chaosfm train``
run as two processes on this machine (CPU collectives over gloo, one CPU device each) against
the same run as one process on two forced devices: the same losses and final weights, one writer
of the checkpoints, a resume of the two-process run's checkpoint by one process, and two processes
reading their own rows from shards."""

import io
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from chaosfm._config import ConfigError, parse_config
from chaosfm.jobs import train as train_job
from chaosfm.train import DistributedConfig, initialize_distributed, local_rows

TOLERANCE = 1e-5
"""Relative, on every loss and weight: float32 all-reduces summed in a different order."""


@pytest.mark.parametrize(
    "values, message",
    [
        ({"coordinator": "localhost"}, r"distributed\.coordinator: 'localhost' is not HOST:PORT"),
        ({"coordinator": "10.0.0.1:70000", "num_processes": 2, "process_id": 0}, "port 70000"),
        ({"coordinator": "h:1234", "num_processes": 2, "process_id": 2}, r"process_id: 2 is out of range"),
        ({"coordinator": "h:1234", "num_processes": 0, "process_id": 0}, "num_processes"),
        ({"coordinator": "h:1234"}, r"num_processes and distributed\.process_id: needed"),
        ({"num_processes": 2, "process_id": 1}, r"distributed\.coordinator: needed"),
        ({"coordinator": "auto", "process_id": 1}, "auto detects"),
        ({"coordinatr": "h:1"}, "coordinatr"),
    ],
)
def test_bad_distributed_settings_name_the_key_and_rule(values, message, monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=message):
        parse_config(DistributedConfig, values, "distributed")


def test_nothing_set_is_one_process(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    config = DistributedConfig()
    assert not config.requested
    assert initialize_distributed(config) is False and initialize_distributed(None) is False
    import jax

    assert jax.process_count() == 1 and not jax.distributed.is_initialized()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    assert DistributedConfig().requested  # JAX's own variable counts as a request
    assert parse_config(DistributedConfig, {"num_processes": 2, "process_id": 1}).requested


def test_the_flags_reach_the_distributed_section(tmp_path):
    config = train_job.read(None, {
        "data.names": ["lorenz63"], "tokenizer.kind": "bins", "model": {"kind": "gpt"}, "out": str(tmp_path),
        train_job.FLAGS["coordinator"]: "127.0.0.1:1234", train_job.FLAGS["num_processes"]: 2,
        train_job.FLAGS["process_id"]: 1,
    })
    assert (config.distributed.coordinator, config.distributed.num_processes, config.distributed.process_id) == (
        "127.0.0.1:1234", 2, 1)
    assert "distributed" not in config.sections()  # how a run is launched is not what it computes
    from chaosfm.cli._main import build_parser

    args = build_parser().parse_args(["train", "--config", "c.yaml", "--out", "o", "--coordinator", "h:1",
                                      "--num-processes", "2", "--process-id", "1"])
    assert (args.coordinator, args.num_processes, args.process_id) == ("h:1", 2, 1)


def test_one_process_holds_every_row():
    import jax
    from jax.sharding import Mesh

    from chaosfm.train import batch_sharding

    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    assert local_rows(batch_sharding(mesh), 8) == slice(0, 8)


WORKER = textwrap.dedent(
    """
    import os, sys
    import chaosfm.train._loop as loop

    real = loop.save_checkpoint

    def recording(run, **kwargs):
        import jax

        with open(os.environ["SAVES_FILE"], "a") as record:
            record.write(f"{jax.process_index()} {kwargs['step']}\\n")
        return real(run, **kwargs)

    loop.save_checkpoint = recording  # who calls the writer, on which process
    from chaosfm.cli._main import main

    sys.exit(main(sys.argv[1:]))
    """
)

CONFIG = {
    "data": {"names": "lorenz63", "options": {"length": 1200}, "embargo": 10},
    "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
    "model": {"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1,
              "devices": 2},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(workdir: Path, env: dict, out: Path, devices: int, extra: list[str], tag: str,
            command: str = "train") -> subprocess.Popen:
    child = dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip(),
                 SAVES_FILE=str(workdir / f"saves-{tag}.txt"))
    child.pop("JAX_COORDINATOR_ADDRESS", None)
    argv = [sys.executable, str(workdir / "worker.py"), command, "--config", str(workdir / "config.yaml"),
            "--out", str(out), *extra]
    log = open(workdir / f"{tag}.log", "w")
    return subprocess.Popen(argv, env=child, stdout=log, stderr=subprocess.STDOUT)


def _wait(processes: dict[str, subprocess.Popen], workdir: Path) -> None:
    for tag, process in processes.items():
        try:
            code = process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            raise
        assert code == 0, f"{tag} exited {code}:\n{(workdir / f'{tag}.log').read_text()[-4000:]}"


def _weights(path: Path) -> list[np.ndarray]:
    """The arrays of an ``eqx.tree_serialise_leaves`` file: one ``np.save`` record per leaf."""
    stream, arrays = io.BytesIO(path.read_bytes()), []
    while stream.tell() < len(stream.getbuffer()):
        arrays.append(np.load(stream, allow_pickle=False))
    return arrays


def _losses(out: Path, name: str = "loss") -> list[float]:
    return [entry[name] for entry in map(json.loads, (out / "log.jsonl").read_text().splitlines())
            if name in entry]


def _build_runs(work: Path, env: dict) -> Path:
    (work / "worker.py").write_text(WORKER)
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    one, two = work / "one", work / "two"
    _wait({"one": _launch(work, env, one, 2, [], "one")}, work)
    address = f"127.0.0.1:{_free_port()}"
    _wait({
        f"rank{rank}": _launch(work, env, two, 1,
                               ["--coordinator", address, "--num-processes", "2", "--process-id", str(rank)],
                               f"rank{rank}")
        for rank in (0, 1)
    }, work)
    # The same two processes with the parameters and optimizer state split over them (fsdp 2),
    # each reading only its own rows of every batch from ArrayRecord shards (`chaosfm shard`).
    _wait({"shard": _launch(work, env, work / "shards", 1, [], "shard", command="shard")}, work)
    address = f"127.0.0.1:{_free_port()}"
    _wait({
        f"fsdp{rank}": _launch(work, env, work / "fsdp", 1,
                               ["--coordinator", address, "--num-processes", "2", "--process-id", str(rank),
                                "--set", "train.mesh={data: 1, fsdp: 2}", "--shards", str(work / "shards")],
                               f"fsdp{rank}")
        for rank in (0, 1)
    }, work)
    # Resume the two-process run's step-3 checkpoint as one process (on two devices).
    resumed = work / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000006")
    _wait({"resumed": _launch(work, env, resumed, 2, ["--resume"], "resumed")}, work)
    return work


@pytest.mark.slow
def test_several_processes_train_checkpoint_and_resume_as_one_process_does(tmp_path, subprocess_env):
    # One test, not one per check: a module fixture of these runs was built once per xdist worker
    # (six Python processes, ~2 min), as tests of the module landed on both workers.
    runs = _build_runs(tmp_path, subprocess_env)
    _check_two_processes_train_what_one_process_trains(runs)
    _check_only_process_zero_writes_the_checkpoints(runs)
    _check_a_two_process_checkpoint_resumes_on_one_process(runs)
    _check_two_processes_with_split_parameters_train_what_one_process_trains(runs)


def _check_two_processes_train_what_one_process_trains(runs: Path) -> None:
    one, two = runs / "one", runs / "two"
    losses_one, losses_two = _losses(one), _losses(two)
    assert len(losses_one) == len(losses_two) == CONFIG["train"]["steps"]
    np.testing.assert_allclose(losses_two, losses_one, rtol=TOLERANCE)
    # The held-out loss (the same windows at every step, so no batch-to-batch noise) agrees too,
    # and falls: it trained.
    held_one, held_two = _losses(one, "val_loss"), _losses(two, "val_loss")
    assert len(held_one) == len(held_two) == CONFIG["train"]["steps"]
    np.testing.assert_allclose(held_two, held_one, rtol=TOLERANCE)
    assert held_two[-1] < held_two[0]
    for name in ("model.eqx", "checkpoints/step_00000006/model.eqx", "checkpoints/step_00000006/opt_state.eqx"):
        weights_one, weights_two = _weights(one / name), _weights(two / name)
        assert len(weights_one) == len(weights_two) > 0, name
        for a, b in zip(weights_one, weights_two):
            np.testing.assert_allclose(b, a, rtol=TOLERANCE, atol=TOLERANCE * np.abs(a).max(), err_msg=name)
    # Not one bit-identical copy: the two runs are separate computations that agree to float32.
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["steps"] == CONFIG["train"]["steps"]


def _check_only_process_zero_writes_the_checkpoints(runs: Path) -> None:
    calls = (runs / "saves-rank0.txt").read_text().split("\n")
    assert [line.split() for line in calls if line] == [["0", "3"], ["0", "6"]]
    assert not (runs / "saves-rank1.txt").exists()  # process 1 never called the writer
    names = sorted(p.name for p in (runs / "two" / "checkpoints").iterdir())
    assert names == ["step_00000003", "step_00000006"]  # no leftovers of a second writer
    log = (runs / "rank1.log").read_text()
    assert "Traceback" not in log


def _check_a_two_process_checkpoint_resumes_on_one_process(runs: Path) -> None:
    one, resumed = runs / "one", runs / "resumed"
    assert [line.split() for line in (runs / "saves-resumed.txt").read_text().split("\n") if line] == [["0", "6"]]
    np.testing.assert_allclose(_losses(resumed), _losses(one), rtol=TOLERANCE)
    for a, b in zip(_weights(one / "model.eqx"), _weights(resumed / "model.eqx")):
        np.testing.assert_allclose(b, a, rtol=TOLERANCE, atol=TOLERANCE * np.abs(a).max())


def _check_two_processes_with_split_parameters_train_what_one_process_trains(runs: Path) -> None:
    one, fsdp = runs / "one", runs / "fsdp"
    # Per-leaf AdamW state instead of one raveled vector: the same update up to float32 rounding.
    np.testing.assert_allclose(_losses(fsdp), _losses(one), rtol=TOLERANCE)
    weights_one, weights_fsdp = _weights(one / "model.eqx"), _weights(fsdp / "model.eqx")
    assert len(weights_one) == len(weights_fsdp) > 0
    for a, b in zip(weights_one, weights_fsdp):
        np.testing.assert_allclose(b, a, rtol=TOLERANCE, atol=TOLERANCE * np.abs(a).max())
    calls = (runs / "saves-fsdp0.txt").read_text().split()
    assert calls == ["0", "3", "0", "6"] and not (runs / "saves-fsdp1.txt").exists()
    # Read from shards: each process's stream position is in the checkpoint, and the two read
    # different records (process p reads rows p*B/2 .. (p+1)*B/2 - 1 of every batch).
    states = json.loads((fsdp / "checkpoints" / "step_00000006" / "batches.json").read_text())["processes"]
    assert [(s["process"], s["processes"], s["next_step"]) for s in states] == [(0, 2, 6), (1, 2, 6)]
    assert states[0]["grain"] != states[1]["grain"]
