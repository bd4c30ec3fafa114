"""Warm start: where the compilation cache lives, that it fills, and that warm-up changes nothing."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from chaosfm.predictor import compilation_cache_dir, enable_compilation_cache, run_stream, warm_up
from chaosfm.predictor._predictor import packed_step
from chaosfm.predictor._warm import CACHE_DIR_ENV, disable_compilation_cache, state_codec

from .test_stream import PREDICTOR, STREAM, _walk


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    import platformdirs

    assert compilation_cache_dir() == Path(platformdirs.user_cache_dir("chaosfm")) / "jax"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert compilation_cache_dir() == tmp_path / "env"
    assert compilation_cache_dir(tmp_path / "flag") == tmp_path / "flag"  # the config key wins


@pytest.fixture
def cache(tmp_path):
    """A private cache for one test; the process goes back to no persistent cache after it."""
    before = jax.config.jax_compilation_cache_dir
    try:
        yield enable_compilation_cache(tmp_path / "cache")
    finally:
        if before is None:
            disable_compilation_cache()
        else:
            enable_compilation_cache(before)


def test_compilation_cache_fills_and_is_private(cache):
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    before = set(os.listdir(cache))

    @jax.jit
    def never_compiled_before(x):
        return jnp.sin(x) * 1.2345 + jnp.float32(67.89)

    jax.block_until_ready(never_compiled_before(jnp.arange(7.0)))
    assert set(os.listdir(cache)) - before  # an entry was written, small and quick as it was


def test_run_stream_uses_the_configured_cache(cache, tmp_path):
    config = STREAM.model_copy(update={"compilation_cache": True, "cache_dir": cache})
    metrics = run_stream(config, tmp_path / "out", series=_walk(5))
    assert metrics["compilation_cache"] == str(cache)
    assert jax.config.jax_compilation_cache_dir == str(cache)


def test_warm_up_compiles_the_production_signature_and_changes_nothing(tmp_path):
    series = _walk(50, seed=9)
    rows_cold, rows_warm = [], []
    run_stream(STREAM.model_copy(update={"warm_up": False}), tmp_path / "a", series=series,
               on_prediction=rows_cold.append)
    step = packed_step(PREDICTOR)
    unpack, pack = state_codec(step)
    sizes = lambda: (step._step._cache_size(), unpack._cache_size(), pack._cache_size())  # noqa: E731
    real = sizes()
    # The zeros have the real shapes, dtypes and weak types: warm-up adds no executable of its
    # own (other tests' deterministic runs may hold a second entry; the counts must not move).
    warm_up(step, PREDICTOR, key=jax.random.key(1))
    assert sizes() == real
    run_stream(STREAM, tmp_path / "b", series=series, on_prediction=rows_warm.append)
    assert sizes() == real
    assert rows_cold == rows_warm  # bit for bit: the zeros pass shares no state or key with the run
