"""Training tests: a persistent compilation cache shared with the subprocesses they start.

A run killed in a subprocess, its resumption and the uninterrupted run it is compared with all
compile the same programs; the cache compiles each once. It lives in the system temp folder,
keyed by JAX on the program and the versions, so it only ever saves time.
"""

import os
import sys
import tempfile

import jax
import pytest

CACHE = os.path.join(tempfile.gettempdir(), f"chaosfm-test-jax-cache-{os.getuid()}")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def subprocess_env():
    """Environment for a child Python that trains: same cache, quiet, no terminal."""
    env = dict(os.environ)
    env.update(
        JAX_COMPILATION_CACHE_DIR=CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        CHAOSFM_PROGRESS="0",
        CHAOSFM_QUIET="1",
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    return env
