"""Shared test setup: strict JAX, quiet progress bars, explicit keys."""

import os
import tempfile

os.environ.setdefault("CHAOSFM_PROGRESS", "0")
# A stream or tune run may turn on JAX's persistent compilation cache; a test session gets an
# empty one of its own (also inherited by CLI subprocesses), never the user's: suite times stay
# those of a fresh machine and tests cannot read executables another run left behind.
os.environ.setdefault("CHAOSFM_CACHE_DIR", tempfile.mkdtemp(prefix="chaosfm-test-cache-"))
os.environ.setdefault("CHAOSFM_QUIET", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh PRNG key; tests split it explicitly."""
    return jax.random.key(0)
