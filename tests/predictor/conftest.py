"""Strict JAX for the predictor tests, keys handed out per test, a private compilation cache."""

import jax
import pytest


@pytest.fixture(autouse=True)
def strict_jax():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def key(request):
    """A key derived from the test's name, so tests do not share randomness."""
    import zlib

    return jax.random.key(zlib.crc32(request.node.name.encode()))


@pytest.fixture
def cache(tmp_path):
    """A private persistent compilation cache for one test; none again after it (as before)."""
    from chaosfm.predictor._warm import disable_compilation_cache, enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    try:
        yield enable_compilation_cache(tmp_path / "cache")
    finally:
        if before is None:
            disable_compilation_cache()
        else:
            enable_compilation_cache(before)
