"""Strict JAX for the predictor tests, and keys handed out per test."""

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
