"""Warm start: where the caches live, that they fill, that a restart loads, and that warm-up changes nothing."""

import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from chaosfm.predictor import compilation_cache_dir, enable_compilation_cache, run_stream, warm_up
from chaosfm.predictor._cache import CONFIG_DIR_ENV
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._warm import CACHE_DIR_ENV

from .test_stream import PREDICTOR, STREAM, _walk


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    """The export key lives in a temporary config folder, never the user's."""
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path_factory.mktemp("config") / "chaosfm"))


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    import platformdirs

    assert compilation_cache_dir() == Path(platformdirs.user_cache_dir("chaosfm")) / "jax"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert compilation_cache_dir() == tmp_path / "env"
    assert compilation_cache_dir(tmp_path / "flag") == tmp_path / "flag"  # the config key wins


def test_compilation_cache_fills_and_is_private(cache):
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    before = set(os.listdir(cache))

    @jax.jit
    def never_compiled_before(x):
        return jnp.sin(x) * 1.2345 + jnp.float32(67.89)

    jax.block_until_ready(never_compiled_before(jnp.arange(7.0)))
    assert set(os.listdir(cache)) - before  # an entry was written, small and quick as it was


def test_warm_up_compiles_the_production_signature_and_changes_nothing(tmp_path):
    series = _walk(50, seed=9)
    rows_cold, rows_warm = [], []
    run_stream(STREAM.model_copy(update={"warm_up": False, "snapshot": tmp_path / "s.msgpack"}),
               series=series, on_prediction=rows_cold.append)
    step = packed_step(PREDICTOR)
    unpack, _ = step._codec  # pack: compiled by warm-up for restores, which these runs do not do
    programs = [step._programs[name] for name in sorted(step._programs)] + [unpack]  # init, step
    sizes = lambda: [p._cache_size() for p in programs]  # noqa: E731
    real = sizes()
    # The warm-up's state comes from init, as the real one does: warm-up adds no executable of its
    # own (other tests' deterministic runs are another PackedStep; these counts must not move).
    warm_up(step, PREDICTOR, key=jax.random.key(1), codec=True)
    assert sizes() == real
    run_stream(STREAM.model_copy(update={"snapshot": tmp_path / "t.msgpack"}), series=series,
               on_prediction=rows_warm.append)
    assert sizes() == real
    assert rows_cold == rows_warm  # bit for bit: the zeros pass shares no state or key with the run


@pytest.mark.slow  # the exported step compiles once (13-23 s on 2 cores); the rest loads
def test_a_restart_loads_every_program_and_predicts_the_same_bits(cache, tmp_path):
    series = _walk(45, seed=10)
    exported = STREAM.model_copy(update={"compilation_cache": True, "cache_dir": cache})
    # A restart: the same files in a new folder, so nothing of the first run's in-memory programs
    # (PackedSteps are cached per config and folder) can stand in for them.
    restarted = exported.model_copy(update={"cache_dir": tmp_path / "restart"})
    runs = {}
    for name, stream in (("traced", STREAM), ("exported", exported), ("loaded", restarted)):
        if name == "loaded":
            shutil.copytree(cache, tmp_path / "restart")
        rows = []
        metrics = run_stream(stream, series=series, on_prediction=rows.append).metrics
        runs[name] = rows
        assert set(metrics["programs"].values()) == {name}, metrics["programs"]
        assert metrics["compilation_cache"] == (None if stream.cache_dir is None else str(stream.cache_dir))
    assert runs["exported"] == runs["traced"]
    assert runs["loaded"] == runs["traced"]
    assert {p.name.split("-")[0] for p in (cache / "exports").iterdir()} == {"init", "step"}


def test_a_world_writable_cache_is_not_enabled(cache, tmp_path, monkeypatch, capsys):
    """JAX would load executables another user left there: the private default is used instead."""
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    used = enable_compilation_cache(shared)  # the fixture restores the test's cache afterwards
    default = (tmp_path / "xdg" / "chaosfm" / "jax").resolve()
    assert used == default and jax.config.jax_compilation_cache_dir == str(default)
    assert oct(os.stat(default).st_mode & 0o777) == "0o700"
    assert os.listdir(shared) == []
    assert str(shared) in capsys.readouterr().err


@pytest.mark.slow  # the step compiles once (13-23 s on 2 cores) and is traced once more
def test_a_planted_step_is_not_run_by_a_restart(cache, tmp_path, monkeypatch, capsys):
    """The attack of the hardening issue: another user replaces the exported step with one whose
    every prediction is 42 and whose sha256 is right. A restart must trace the real step instead."""
    import hashlib

    import jax.numpy as jnp
    import msgpack

    from chaosfm.predictor._cache import cache_secret

    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    series = _walk(30, seed=12)
    exported = STREAM.model_copy(update={"compilation_cache": True, "cache_dir": cache})
    rows = []
    assert run_stream(exported, series=series, on_prediction=rows.append).metrics["programs"]["step"] == "exported"
    (real,) = (cache / "exports").glob("step-*")
    document = msgpack.unpackb(real.read_bytes(), raw=False)
    body = msgpack.unpackb(document["payload"], raw=False)
    genuine = jax.export.deserialize(bytearray(body["exported"]))

    def forty_two(*arguments):
        return jax.tree.unflatten(genuine.out_tree, [jnp.full(a.shape, 42, a.dtype) for a in genuine.out_avals])

    planted = jax.export.export(jax.jit(forty_two))(*genuine.in_avals)
    payload = msgpack.packb({"exported": bytes(planted.serialize()), "aux": body["aux"]}, use_bin_type=True)
    forged = {**document, "payload": payload, "sha256": hashlib.sha256(payload).hexdigest()}
    forged.pop("hmac")
    restart = tmp_path / "restart"  # a new folder: the first run's in-memory programs cannot stand in
    shutil.copytree(cache, restart)
    assert cache_secret()  # the attacker cannot read it; the file name they can learn from ls
    (restart / "exports" / real.name).write_bytes(msgpack.packb(forged, use_bin_type=True))
    replayed = []
    metrics = run_stream(exported.model_copy(update={"cache_dir": restart}), series=series,
                         on_prediction=replayed.append).metrics
    assert metrics["programs"]["step"] == "exported"  # traced again, not loaded
    assert metrics["programs"]["init"] == "loaded"  # the genuine files still load
    assert replayed == rows
    assert all(row["prediction_next"] != 42.0 for row in replayed)
    assert "HMAC does not verify" in capsys.readouterr().err
