"""Folders at fsspec URLs: copies between local and memory filesystems checked file by file against
hashlib, resumed after an interruption, never overwriting a finished copy, naming damaged files."""

import hashlib
import json
import os
import uuid

import fsspec
import pytest

import chaosfm._storage as storage
from chaosfm._artifacts import ArtifactError
from chaosfm._config import ConfigError
from chaosfm._storage import MANIFEST, copy_tree, filesystem, is_url, read_manifest, verify_tree

FILES = {
    "config.yaml": b"model: gpt\n",
    "empty.txt": b"",
    "checkpoints/step_00000003/model.eqx": os.urandom(3 * storage.CHUNK + 17),  # several chunks
    "checkpoints/step_00000003/meta.json": b'{"step": 3}\n',
    "deep/er/still/log.jsonl": b'{"step": 1}\n' * 100,
}


@pytest.fixture
def memory():
    """A fresh ``memory://`` folder; the memory filesystem is process-global, so it is removed after."""
    root = f"/chaosfm-test-{uuid.uuid4().hex}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def write_tree(location, files=FILES):
    fs, root = filesystem(location)
    for name, data in files.items():
        fs.makedirs(f"{root}/{name}".rpartition("/")[0], exist_ok=True)
        with fs.open(f"{root}/{name}", "wb") as stream:
            stream.write(data)


def read_tree(location):
    """``{relative path: bytes}`` of every file under ``location`` but the manifest."""
    fs, root = filesystem(location)
    found = {}
    for path in fs.find(root):
        name = fs._strip_protocol(path)[len(root.rstrip("/")) + 1:]
        if name != MANIFEST:
            with fs.open(path, "rb") as stream:
                found[name] = stream.read()
    return found


def expected_manifest(files=FILES):
    return {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}


def test_urls_and_paths():
    for url in ("memory://x", "s3://bucket/a/b", "gs://b", "simplecache::s3://b/x", "az://c/x"):
        assert is_url(url), url
    for path in ("runs/x", "/tmp/x", "file:///tmp/x", "C:\\runs\\x", "x://"[:-3], "~/runs"):
        assert not is_url(path), path
    assert filesystem("file:///tmp/x")[1] == "/tmp/x"
    assert filesystem("memory://a/b")[1] == "/a/b"


@pytest.mark.parametrize("direction", ["local->local", "local->memory", "memory->local"])
def test_a_copy_holds_the_same_files_and_hashes(direction, tmp_path, memory):
    source = memory if direction.startswith("memory") else str(tmp_path / "source")
    destination = memory if direction.endswith("memory") else tmp_path / "copy"
    write_tree(source)
    done = copy_tree(source, destination, what="test")
    assert read_tree(destination) == FILES
    assert (done.files, done.bytes, done.skipped) == (len(FILES), sum(map(len, FILES.values())), 0)
    manifest = read_manifest(destination)
    assert manifest["complete"] and manifest["files"] == expected_manifest()
    assert verify_tree(destination) == manifest
    if destination != memory:  # nothing temporary is left behind
        assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted([MANIFEST, "checkpoints", "config.yaml",
                                                                                 "deep", "empty.txt"])


def test_an_interrupted_copy_resumes_with_the_files_it_lacks(tmp_path, memory, monkeypatch):
    write_tree(tmp_path / "source")
    real, calls, failed = storage._copy_file, [], []

    def flaky(src_fs, src, dst_fs, dst, advance):
        calls.append(dst.rpartition(memory.removeprefix("memory:/"))[2].lstrip("/"))
        if dst.endswith("model.eqx") and not failed:  # the copy of one file fails once, half written
            failed.append(dst)
            with dst_fs.open(storage._partial_name(dst), "wb") as stream:
                stream.write(b"half")
            raise OSError("connection reset")
        return real(src_fs, src, dst_fs, dst, advance)

    monkeypatch.setattr(storage, "_copy_file", flaky)
    with pytest.raises(OSError, match="connection reset"):
        copy_tree(tmp_path / "source", memory, what="test")
    before = list(calls)
    assert before[-1] == "checkpoints/step_00000003/model.eqx"
    assert read_manifest(memory)["complete"] is False  # partial: its manifest says so
    copied_before = set(before[:-1])
    assert copied_before and copied_before < set(FILES)

    calls.clear()
    done = copy_tree(tmp_path / "source", memory, what="test")
    assert set(calls) == set(FILES) - copied_before  # only the rest is copied
    assert done.skipped == len(copied_before) and done.files == len(FILES) - len(copied_before)
    assert read_tree(memory) == FILES  # and the half-written temporary file is gone
    assert read_manifest(memory) == {"format": 1, "complete": True, "files": expected_manifest()}


def test_a_resume_recopies_a_file_whose_bytes_differ(tmp_path, memory):
    write_tree(tmp_path / "source")
    write_tree(memory, {"config.yaml": b"model: gpX\n"})  # same size, other bytes: a damaged partial copy
    fs, root = filesystem(memory)
    fs.pipe(f"{root}/{MANIFEST}", json.dumps({"complete": False, "files": {}}).encode())
    done = copy_tree(tmp_path / "source", memory, what="test")
    assert done.skipped == 0 and read_tree(memory) == FILES


def test_a_finished_copy_or_a_foreign_folder_is_not_overwritten(tmp_path, memory):
    write_tree(tmp_path / "source")
    copy_tree(tmp_path / "source", memory, what="data stage")
    with pytest.raises(ConfigError, match=f"data stage: destination {memory} already holds a complete copy"):
        copy_tree(tmp_path / "source", memory, what="data stage")
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files but no .chaosfm-manifest.json"):
        copy_tree(tmp_path / "source", foreign, what="data stage")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="inside the source"):
        copy_tree(tmp_path / "source", tmp_path / "source" / "sub", what="data stage")
    with pytest.raises(ConfigError, match="no such folder"):
        copy_tree(tmp_path / "nothing", tmp_path / "x", what="data stage")

    # --force updates a finished copy to the source: changed files replaced, removed files removed.
    (tmp_path / "source" / "config.yaml").write_bytes(b"model: mamba\n")
    (tmp_path / "source" / "empty.txt").unlink()
    done = copy_tree(tmp_path / "source", memory, what="data stage", force=True)
    now = {**{k: v for k, v in FILES.items() if k != "empty.txt"}, "config.yaml": b"model: mamba\n"}
    assert read_tree(memory) == now and read_manifest(memory)["files"] == expected_manifest(now)
    assert (done.files, done.removed, done.skipped) == (1, 1, len(now) - 1)


def test_damaged_files_are_named(tmp_path, memory):
    write_tree(tmp_path / "source")
    copy_tree(tmp_path / "source", memory, what="archive")
    fs, root = filesystem(memory)
    name = "checkpoints/step_00000003/meta.json"
    fs.pipe(f"{root}/{name}", b'{"step": 4}\n')  # same size, other bytes
    with pytest.raises(ArtifactError, match=f"{name}: damaged"):
        verify_tree(memory)
    # Staging the damaged cold copy back names the file, and leaves no damaged file behind.
    with pytest.raises(ArtifactError, match=f"{name}: damaged .sha256 does not match"):
        copy_tree(memory, tmp_path / "hot", what="data stage")
    assert not (tmp_path / "hot" / name).exists()
    fs.pipe(f"{root}/config.yaml", b"truncated")
    with pytest.raises(ArtifactError, match="config.yaml: damaged .9 bytes"):
        copy_tree(memory, tmp_path / "hot2", what="data stage")
    fs.rm(f"{root}/config.yaml")
    with pytest.raises(ArtifactError, match="config.yaml: listed in .chaosfm-manifest.json but missing"):
        verify_tree(memory)


def test_a_copy_that_does_not_read_back_as_its_source_is_refused(tmp_path, memory, monkeypatch):
    write_tree(tmp_path / "source", {"a.bin": b"abc"})
    real = storage._sha256
    monkeypatch.setattr(storage, "_sha256", lambda fs, path: "0" * 64 if "a.bin" in path else real(fs, path))
    with pytest.raises(ArtifactError, match="a.bin: the copy's sha256 differs from its source"):
        copy_tree(tmp_path / "source", memory, what="test")
    assert "a.bin" not in read_tree(memory)


def test_an_unfinished_copy_is_not_a_source(tmp_path, memory):
    write_tree(memory, {"a.txt": b"a"})
    fs, root = filesystem(memory)
    fs.pipe(f"{root}/{MANIFEST}", json.dumps({"complete": False, "files": {}}).encode())
    with pytest.raises(ConfigError, match="is an unfinished copy"):
        copy_tree(memory, tmp_path / "hot", what="data stage")
    assert copy_tree(memory, tmp_path / "hot", what="resume", partial_source=True).files == 1


def test_a_missing_filesystem_package_is_named(monkeypatch):
    from fsspec.registry import known_implementations

    monkeypatch.setitem(known_implementations, "chaosfmtest",
                        {"class": "chaosfm_absent_fs.AbsentFileSystem", "err": "Install chaosfm_absent_fs to reach it"})
    with pytest.raises(ConfigError, match=r"the chaosfmtest:// filesystem is not installed \(Install chaosfm_absent_fs "
                                          r"to reach it\): pip install chaosfm_absent_fs"):
        filesystem("chaosfmtest://bucket/run")
    with pytest.raises(ConfigError, match="unknown URL scheme 'nosuchscheme'"):
        filesystem("nosuchscheme://bucket/run")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install s3fs"):
            copy_tree("s3://bucket/run", "/tmp/never", what="data stage")


def test_a_long_copy_shows_a_bar_over_bytes(tmp_path, memory, monkeypatch, capsys):
    from chaosfm import _progress

    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    real = _progress.byte_progress
    seen = []

    def at_once(total, description, *, after=2.0):  # the bar appears at once, not after two seconds
        seen.append(total)
        return real(total, description, after=0.0)

    monkeypatch.setattr(_progress, "byte_progress", at_once)
    write_tree(tmp_path / "source")
    copy_tree(tmp_path / "source", memory, what="test")
    assert seen == [sum(map(len, FILES.values()))]
    assert read_tree(memory) == FILES
