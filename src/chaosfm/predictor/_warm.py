"""Warm start: a persistent compilation cache, a warm-up pass, and the deterministic mode.

A cold ``chaosfm stream`` spends most of its time to the first prediction compiling the packed
step (seconds of XLA), its init, and later the DGM warm start's training loop. Two caches in one
private directory make a restart skip both halves of that work: JAX's persistent compilation
cache (:func:`enable_compilation_cache`; every entry cached, minimum compile time 0) keeps the
executables, and the predictor's exports (``exports/`` inside it, ``_export.py``) keep the traced
programs, so a fresh process neither traces (which the compilation cache alone does not save: it
is looked up by the traced program) nor compiles. Both are trusted when loaded, so the directory
is used only if it is private (``_cache.py``). :func:`warm_up` then runs init and the step once
on a zero and compiles the warm start's training ahead of time, so the first real observation,
and the step where warm-up ends, pay for neither.

Deterministic mode (:func:`deterministic_mode`): matmul precision ``"highest"`` (no reduced
precision passes, which an accelerator would otherwise use for float32 dots), the PRNG
implementation pinned to ``threefry2x32`` with ``jax_threefry_partitionable`` on, so a user's
global JAX settings cannot change the random stream. With it, two runs with the same config and
seed on the same machine give bit-identical predictions, and so does a run restored from a
snapshot (tests/predictor/test_determinism.py). The predictor's own state key is an explicit
``unsafe_rbg`` key made by ``init_predictor`` and is unaffected either way.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

# CACHE_DIR_ENV and compilation_cache_dir: re-exported, chaosfm.predictor imports them from here.
from chaosfm.predictor._cache import CACHE_DIR_ENV, compilation_cache_dir, usable_cache_dir  # noqa: F401
from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._packed_step import PackedStep

PRNG_IMPL = "threefry2x32"


def enable_compilation_cache(directory: str | os.PathLike[str]) -> Path | None:
    """Use ``directory`` as JAX's persistent compilation cache for the rest of the process.

    Every compiled executable is cached, however small or quick to compile. JAX trusts what it
    loads from its cache, so the directory must be private (:func:`usable_cache_dir`: created
    0700, or owned by this user and writable by nobody else); one that is not is refused with a
    note on stderr and the private default is used instead.

    Returns:
        The directory in use, or None if neither it nor the default is private (no cache).
    """
    path = usable_cache_dir(directory)
    if path is None:
        return None
    if jax.config.jax_compilation_cache_dir == str(path):
        return path
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # JAX decides once per process whether a cache is in use; start over with this directory.
    compilation_cache.reset_cache()
    return path


def disable_compilation_cache() -> None:
    """Stop using a persistent compilation cache in this process (undoes the above)."""
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


def warm_up(
    step: PackedStep,
    config: PredictorConfig,
    *,
    key: jax.Array,
    background: bool = True,
    codec: bool = False,
) -> threading.Thread | None:
    """Compile (or load from the caches) everything a stream runs, on zeros; no state is touched.

    Runs ``step``'s ``init`` (the first observation's program) on a zero, the step on that state
    and a zero observation (outputs discarded), optionally the packing round trip that snapshots
    use (``codec``), then compiles, without running, the warm start's training for the
    shapes of ``config``: in a background thread by default, since it is first needed when the
    predictor's warm-up period ends, not for the first prediction.

    Args:
        step: the packed step the stream will call.
        config: its predictor config.
        key: any key of the implementation the stream's init and warm start will get (only its
            type is used).
        background: compile the training in a started thread (returned; join it before exit).
        codec: also compile the state's jitted pack/unpack (snapshots, restores).

    Returns:
        The thread compiling the warm start's training, or None (compiled already, or no training).
    """
    # The state init makes from a zero: the step then sees arrays exactly like the real ones.
    packed_out, packed = step(step.init(step.value(0.0), key), step.value(0.0))
    step.output(packed_out)
    if codec:
        jax.block_until_ready(step.pack(step.unpack(packed)))
    if config.dgm.fit_steps == 0:
        return None

    def compile_training() -> None:
        # Trace-time settings are thread-local: the step's (deterministic mode) are re-entered.
        with step.trace_settings():
            step.compile_warm_start(key)

    if not background:
        compile_training()
        return None
    thread = threading.Thread(target=compile_training, name="chaosfm-warm-up", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Within: matmul precision "highest", threefry2x32 keys, partitionable threefry (see above)."""
    if not enabled:
        yield
        return
    with (
        jax.default_matmul_precision("highest"),
        jax.default_prng_impl(PRNG_IMPL),
        jax.threefry_partitionable(True),
    ):
        yield
