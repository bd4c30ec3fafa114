"""Shared test setup: strict JAX, quiet progress bars, explicit keys."""

import os

os.environ.setdefault("CHAOSFM_PROGRESS", "0")
os.environ.setdefault("CHAOSFM_QUIET", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh PRNG key; tests split it explicitly."""
    return jax.random.key(0)
