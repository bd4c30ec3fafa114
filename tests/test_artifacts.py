"""Run folders: atomic writes and hash checks that name the damaged file."""

import hashlib
import json
import re

import pytest

from chaosfm._artifacts import ArtifactError, atomic_write_text, verify_run, write_json, write_meta


def test_meta_hashes_and_damage_is_named(tmp_path):
    atomic_write_text(tmp_path / "metrics.json", "{}\n")
    write_json(tmp_path / "nested" / "a.json", {"x": 1})
    write_meta(tmp_path, seed=3, trained_through={"a": "2020-01-01"})
    meta = verify_run(tmp_path)
    assert meta["seed"] == 3 and set(meta["files"]) == {"metrics.json", "nested/a.json"}
    (tmp_path / "nested" / "a.json").write_text('{"x": 2}')
    with pytest.raises(ArtifactError, match="a.json: damaged"):
        verify_run(tmp_path)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match="metrics.json"):
        verify_run(tmp_path)


def test_json_refuses_nan_and_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("entry", ["../secret.txt", "ABSOLUTE", "link.txt", "sub/../../secret.txt"])
def test_meta_entries_outside_the_run_folder_are_refused(tmp_path, entry):
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's")
    run = tmp_path / "run"
    run.mkdir()
    (run / "sub").mkdir()
    (run / "link.txt").symlink_to(secret)
    atomic_write_text(run / "a.txt", "x")
    write_meta(run, seed=0)
    entry = str(secret) if entry == "ABSOLUTE" else entry
    meta = json.loads((run / "meta.json").read_text())
    # The right hash, so only the confinement rule can refuse it.
    meta["files"] = {"a.txt": meta["files"]["a.txt"], entry: hashlib.sha256(secret.read_bytes()).hexdigest()}
    write_json(run / "meta.json", meta)
    with pytest.raises(ArtifactError, match=rf"files entry '{re.escape(entry)}' points outside the run folder"):
        verify_run(run)
