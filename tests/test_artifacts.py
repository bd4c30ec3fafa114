"""Run folders: atomic writes and hash checks that name the damaged file."""

import json

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
