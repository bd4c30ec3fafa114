"""Tiered data: ``chaosfm data stage`` / ``data archive`` through the command line, and ``chaosfm train
--out`` a URL, resumed from the URL alone, ending where a local run ends."""

import hashlib
import json
import uuid
from pathlib import Path

import fsspec
import pytest

from chaosfm._artifacts import write_json, write_meta
from chaosfm._config import ConfigError
from chaosfm._storage import MANIFEST, filesystem, read_manifest, verify_tree
from chaosfm.cli import main
from chaosfm.jobs import train as train_job
from chaosfm.jobs.train import parse_train_run_file

from .test_train import lorenz_config


@pytest.fixture
def memory():
    """A fresh ``memory://`` folder, removed after the test (the memory filesystem is process-global)."""
    root = f"/chaosfm-tiers-{uuid.uuid4().hex}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def files_of(location) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``location`` but the manifest."""
    fs, root = filesystem(location)
    found = {}
    for path in fs.find(root):
        name = fs._strip_protocol(path)[len(root.rstrip("/")) + 1:]
        if name != MANIFEST:
            found[name] = hashlib.sha256(fs.cat_file(path)).hexdigest()
    return found


def finished_run(folder: Path) -> Path:
    """A run folder as a job leaves it: files, a checkpoint, metrics.json, then meta.json."""
    write_json(folder / "config.yaml", {"model": "gpt"})
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    checkpoint = folder / "checkpoints" / "step_00000001"
    write_json(checkpoint / "state.json", {"step": 1})
    write_meta(checkpoint, seed=0)
    write_json(folder / "metrics.json", {"loss": 1.0})
    write_meta(folder, seed=0)
    return folder


def test_stage_copies_down_and_refuses_to_overwrite(memory, tmp_path, capsys):
    fs, root = filesystem(memory)
    fs.pipe({f"{root}/prices.csv": b"timestamp,close\n2020-01-01,1\n", f"{root}/sub/b.bin": bytes(range(256)) * 9})
    hot = tmp_path / "hot"
    assert main(["data", "stage", memory, str(hot)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # however rich wraps it
    assert "2 files (2,333 bytes) copied, 0 (0 bytes) already there" in out, out
    assert files_of(hot) == files_of(memory) and len(files_of(hot)) == 2
    assert main(["data", "stage", memory, str(hot)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chaosfm: error: data stage: destination") and str(hot) in err and "complete copy" in err
    assert main(["data", "stage", memory, str(hot), "--force"]) == 0
    assert "0 files (0 bytes) copied, 2 (2,333 bytes) already there" in " ".join(capsys.readouterr().out.split())


def test_archive_copies_a_finished_run_and_refuses_an_unfinished_one(memory, tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    assert main(["data", "archive", str(run), memory]) == 0
    assert files_of(memory) == {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
                                for name in ("config.yaml", "log.jsonl", "metrics.json", "meta.json",
                                             "checkpoints/step_00000001/state.json",
                                             "checkpoints/step_00000001/meta.json")}
    assert verify_tree(memory)["complete"]
    capsys.readouterr()

    unfinished = tmp_path / "unfinished"
    write_json(unfinished / "config.yaml", {"model": "gpt"})
    assert main(["data", "archive", str(unfinished), f"{memory}-b"]) == 2
    assert "not a finished run folder: metrics.json and meta.json are missing" in capsys.readouterr().err
    write_json(unfinished / "metrics.json", {})
    assert main(["data", "archive", str(unfinished), f"{memory}-b"]) == 2
    assert "meta.json is missing" in capsys.readouterr().err

    (run / "checkpoints" / ".step_00000002.x1y2").mkdir()  # a checkpoint being written
    assert main(["data", "archive", str(run), f"{memory}-b"]) == 2
    assert "partial checkpoints (.step_00000002.x1y2" in capsys.readouterr().err
    (run / "checkpoints" / ".step_00000002.x1y2").rmdir()
    (run / "log.jsonl").write_text('{"step": 2}\n')  # a file changed after meta.json recorded it
    assert main(["data", "archive", str(run), f"{memory}-b"]) == 2
    assert "log.jsonl: damaged (sha256 does not match meta.json)" in capsys.readouterr().err
    assert not fsspec.filesystem("memory").exists(filesystem(f"{memory}-b")[1])  # nothing was copied


def test_only_train_takes_a_url_out(memory, capsys):
    assert main(["evaluate", "--data", "sp500", "--out", f"{memory}/eval"]) == 2
    err = capsys.readouterr().err
    assert "key 'out'" in err and "only `chaosfm train` writes its run folder to a URL" in err, err
    config = parse_train_run_file({**lorenz_config(), "out": f"{memory}/run"})
    assert config.out == f"{memory}/run"  # kept as a URL, not folded into a local memory:/ folder
    fs, root = filesystem(memory)
    fs.pipe(f"{root}/run/config.yaml", b"{}")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train_job.run(config)


class Crash(Exception):
    """The machine dies."""


@pytest.mark.slow
def test_train_at_a_url_resumes_from_the_url_alone_and_ends_as_a_local_run(memory, tmp_path, monkeypatch):
    settings = lorenz_config()  # 6 steps, a checkpoint every 3
    local = tmp_path / "local"
    train_job.run(parse_train_run_file({**settings, "out": str(local)}))

    url = f"{memory}/run"
    monkeypatch.setenv("CHAOSFM_WORK_DIR", str(tmp_path / "machine-a"))

    def die_after_step_4(step, metrics):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        train_job.run(parse_train_run_file({**settings, "out": url}), on_step=die_after_step_4)
    mirrored = read_manifest(url)
    assert mirrored["complete"] and "checkpoints/step_00000003/model.eqx" in mirrored["files"]
    assert "meta.json" not in mirrored["files"]  # the run did not finish: at most the steps since 3 are lost

    # Another machine: an empty work folder; everything comes from the URL.
    monkeypatch.setenv("CHAOSFM_WORK_DIR", str(tmp_path / "machine-b"))
    steps = []
    metrics = train_job.run(parse_train_run_file({**settings, "out": url, "resume": True}),
                            on_step=lambda step, metrics: steps.append(step))
    assert steps == [4, 5, 6] and metrics["steps"] == 6  # resumed from the URL's checkpoint of step 3
    verify_tree(url)
    remote = files_of(url)
    for name in ("checkpoints/step_00000006/model.eqx", "checkpoints/step_00000006/opt_state.eqx", "model.eqx",
                 "tokenizer/tokenizer.json", "codes.json"):
        assert remote[name] == hashlib.sha256((local / name).read_bytes()).hexdigest(), name
    assert json.loads(fsspec.filesystem("memory").cat_file(filesystem(url)[1] + "/metrics.json"))["heldout"] == \
        json.loads((local / "metrics.json").read_text())["heldout"]
