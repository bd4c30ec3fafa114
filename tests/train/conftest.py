"""Training tests: a persistent compilation cache shared with the subprocesses they start.

A run killed in a subprocess, its resumption and the uninterrupted run it is compared with all
compile the same programs; the cache compiles each once. It lives in a private per-user folder
of the system temp folder (a new one if that folder is not private), keyed by JAX on the program
and the versions, so it only ever saves time.
"""

import os
import stat
import sys
import tempfile

import jax
import pytest



def _private_cache() -> str:
    """The per-user cache folder in the temp folder, if it is ours and private; else a new one
    (a folder another user planted there, or one others can write to, is never used)."""
    path = os.path.join(tempfile.gettempdir(), f"chaosfm-test-jax-cache-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return path
    return tempfile.mkdtemp(prefix="chaosfm-test-jax-cache-")


CACHE = _private_cache()
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
