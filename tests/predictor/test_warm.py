"""Warm start: where the caches live, that they fill, that a restart loads, and that warm-up changes nothing."""

import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from chaosfm.predictor import compilation_cache_dir, run_stream, warm_up
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._warm import CACHE_DIR_ENV

from .test_stream import PREDICTOR, STREAM, _walk


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
