"""The predictor's compiled programs over a packed state, traced once or loaded from exports.

A live loop calls three programs: ``init`` (the state after the first observation), ``step`` (one
observation) and ``warm_start`` (the DGM network's training when warm-up ends). Each takes and
returns the state as two flat vectors (``_packing.py``), so dispatch does not pay per leaf, and
each is either traced here or, given an export folder, loaded from a ``jax.export`` file there
(``_export.py``): a restart with a warm cache then runs no Python trace at all, and the
compilation cache serves the executables.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._export import ExportCache, Program, program, trace_context, trace_settings
from chaosfm.predictor._kernel_dgm import TRAIN_COMPILER_OPTIONS
from chaosfm.predictor._packing import Packed, TreeLayout
from chaosfm.predictor._predictor import (
    PredictorOutput,
    PredictorState,
    _keep_if_finite,
    _unguarded_update,
    _warm_start,
    freshness_mask,
    init_predictor,
)


def state_layout(config: PredictorConfig) -> TreeLayout:
    """Where each leaf of ``config``'s ``PredictorState`` lives when packed (one abstract trace)."""
    found = []

    def trace(key):
        # Built from the traced state: shapes, dtypes and key implementations are all known here.
        found.append(TreeLayout(init_predictor(config, 1.0, key=key)))
        return ()

    jax.eval_shape(trace, jax.random.key(0))
    return found[0]


class PackedStep:
    """The predictor's programs over a packed state: the form a live loop should call.

    The state crosses the jit boundary as two vectors and the output as two more (see
    ``_packing.py``): dispatching the ~120-leaf ``PredictorState`` cost more than the step's
    arithmetic. Three programs, each compiled once per config:

    - ``init(value, key) -> packed`` the state after the first observation;
    - ``step(packed, value) -> (packed_output, packed)`` one observation (``__call__``; the input
      state's buffers are donated);
    - ``warm_start(packed, key) -> packed`` the DGM network's training (:func:`warm_start`).

    With ``export_dir`` each program is loaded from a ``jax.export`` file there instead of being
    traced, or traced once and written there (``_export.py``): a restart then traces nothing, and
    the host-side layouts come from the files too. ``status`` says, per program, ``"traced"``,
    ``"loaded"`` or ``"exported"``. ``pack``/``unpack`` convert ``PredictorState`` trees (their
    layout is traced on first use), ``output`` turns a host copy of ``packed_output`` into a
    ``PredictorOutput`` of NumPy values.

    A step is bound to the JAX trace settings it was made under (``context``; :func:`packed_step`
    keys on them): call it under the same ones, and under ``trace_settings()`` in another thread.
    x64 is one of them: with it on, the state, the observations and the outputs are float64
    (:attr:`dtype`; give observations as :meth:`value` makes them).
    """

    def __init__(
        self, config: PredictorConfig, *, export_dir: Path | None = None, context: dict[str, Any] | None = None
    ):
        self.config = config
        self.exports = ExportCache(export_dir) if export_dir is not None else None
        self.context = trace_context() if context is None else dict(context)
        self.status: dict[str, str] = {}
        self.output_layout: TreeLayout | None = None
        self._state_layout: TreeLayout | None = None
        self._state_sizes: tuple[int, int] | None = None
        self._programs: dict[tuple[str, str], Callable[..., Any]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def dtype(self) -> np.dtype:
        """The float dtype of the state, the observations and the outputs (read off the context,
        so a step loaded from its export knows it without a trace)."""
        return np.dtype(np.float64 if self.context.get("x64") else np.float32)

    def value(self, value) -> np.ndarray:
        """An observation as the programs take it: a scalar of :attr:`dtype` (NaN: none fresh)."""
        return np.asarray(value, self.dtype)

    @property
    def state_layout(self) -> TreeLayout:
        if self._state_layout is None:
            self._state_layout = state_layout(self.config)
        return self._state_layout

    @property
    def state_sizes(self) -> tuple[int, int]:
        """Lengths of the packed state's float and int vectors."""
        if self._state_sizes is None:
            self._step_program()  # written beside the step's export
        return self._state_sizes

    def init(self, value, key: jax.Array) -> Packed:
        """The packed state after the first observation ``value`` (``init_predictor``)."""
        return _committed(Packed(*self._key_program("init", key)(value, jax.random.key_data(key))))

    def __call__(self, packed: Packed, value) -> tuple[Packed, Packed]:
        out_floats, out_ints, floats, ints = self._step_program()(packed.floats, packed.ints, value)
        return Packed(out_floats, out_ints), Packed(floats, ints)

    def warm_start(self, packed: Packed, key: jax.Array) -> Packed:
        """:func:`warm_start` on a packed state (the same training, one executable with the packing)."""
        if self.config.dgm.fit_steps == 0:
            return packed
        program = self._key_program("warm_start", key)
        return _committed(Packed(*program(packed.floats, packed.ints, jax.random.key_data(key))))

    def compile_warm_start(self, key: jax.Array) -> None:
        """Compile (or load) :meth:`warm_start`'s program for keys like ``key``, without running it."""
        if self.config.dgm.fit_steps == 0:
            return
        floats, ints = self.state_sizes
        # Arguments like the real call's (a committed state, the key's data), or the real call
        # would be compiled anew: a jit compiles per argument sharding.
        zeros = Packed(jax.device_put(np.zeros(floats, self.dtype)), jax.device_put(np.zeros(ints, np.int32)))
        state = _committed(zeros)
        self._key_program("warm_start", key).lower(state.floats, state.ints, jax.random.key_data(key)).compile()

    def trace_settings(self):
        """Context manager: this step's thread-local trace settings (for use in other threads)."""
        return trace_settings(self.context)

    def pack(self, state: PredictorState) -> Packed:
        return _committed(self._codec[1](state))

    def unpack(self, packed: Packed) -> PredictorState:
        return self._codec[0](packed)

    @functools.cached_property
    def _codec(self) -> tuple[Callable[[Packed], PredictorState], Callable[[PredictorState], Packed]]:
        # One executable each (exact: slices, casts); eagerly each is ~140 small ops, every one of
        # which a fresh process would look up in the compilation cache.
        return jax.jit(self.state_layout.unpack), jax.jit(self.state_layout.pack)

    def output(self, packed_output: Packed) -> PredictorOutput:
        return self.output_layout.unpack_host(jax.device_get(packed_output))

    # -- programs ------------------------------------------------------------------------------

    def _program(self, name: str, impl: str, build: Callable[[], Program]) -> Callable[..., Any]:
        found = self._programs.get((name, impl))
        if found is not None:
            return found
        with self._lock:
            lock = self._locks.setdefault((name, impl), threading.Lock())
        with lock:  # a warm-up thread may be making this very program: wait for it, once
            if (name, impl) not in self._programs:
                made = build()
                self.status[name] = made.status
                self._programs[(name, impl)] = made.function
        return self._programs[(name, impl)]

    def _step_program(self) -> Callable[..., Any]:
        return self._program("step", "", self._build_step)

    def _key_program(self, name: str, key: jax.Array) -> Callable[..., Any]:
        impl, shape = jax.random.key_impl(key), jax.random.key_data(key).shape
        build = self._build_init if name == "init" else self._build_warm_start
        return self._program(name, str(impl), lambda: build(impl, shape))

    def _build_step(self) -> Program:
        config = self.config

        def step(floats, ints, value):
            layout, packed = self.state_layout, Packed(floats, ints)
            out, state = _unguarded_update(layout.unpack(packed), value, config)
            # The output's layout is read off the step's own trace: a restart pays no other trace.
            self.output_layout = TreeLayout(out)
            out = self.output_layout.pack(out)
            # update_predictor's guard, on two vectors rather than on every leaf (the freshness
            # counters' entries are written whatever the value: a constant mask).
            written = _written_entries(layout, state)
            state = _keep_if_finite(value, layout.pack(state), packed, written)
            return out.floats, out.ints, state.floats, state.ints

        def specs():
            floats, ints = self.state_layout.sizes
            return (jax.ShapeDtypeStruct((floats,), self.dtype), jax.ShapeDtypeStruct((ints,), jnp.int32),
                    jax.ShapeDtypeStruct((), self.dtype))

        def output_leaves():
            return {"output": [[list(slot.shape), np.dtype(slot.dtype).name] for slot in self.output_layout.slots]}

        made = program("step", step, specs, config=config, cache=self.exports, context=self.context,
                       aux=output_leaves, committed=(True, True, False), donate_argnums=(0, 1))
        if made.status == "loaded":
            leaves = [jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)) for shape, dtype in made.aux["output"]]
            self.output_layout = TreeLayout(PredictorOutput(*leaves))
        self._state_sizes = (made.specs[0].shape[0], made.specs[1].shape[0])
        return made

    def _build_init(self, impl, key_shape: tuple[int, ...]) -> Program:
        config = self.config

        def init(value, key_data):
            key = jax.random.wrap_key_data(key_data, impl=impl)
            return tuple(self.state_layout.pack(init_predictor(config, value, key=key)))

        def specs():
            return (jax.ShapeDtypeStruct((), self.dtype), jax.ShapeDtypeStruct(key_shape, jnp.uint32))

        return program("init", init, specs, config=config, cache=self.exports, context=self.context,
                       extra={"key": str(impl)})

    def _build_warm_start(self, impl, key_shape: tuple[int, ...]) -> Program:
        config = self.config

        def warm(floats, ints, key_data):
            layout, key = self.state_layout, jax.random.wrap_key_data(key_data, impl=impl)
            return tuple(layout.pack(_warm_start(layout.unpack(Packed(floats, ints)), config, key)))

        def specs():
            floats, ints = self.state_sizes
            return (jax.ShapeDtypeStruct((floats,), self.dtype), jax.ShapeDtypeStruct((ints,), jnp.int32),
                    jax.ShapeDtypeStruct(key_shape, jnp.uint32))

        return program("warm_start", warm, specs, config=config, cache=self.exports, context=self.context,
                       extra={"key": str(impl)}, committed=(True, True, False),
                       compiler_options=TRAIN_COMPILER_OPTIONS)


def _written_entries(layout: TreeLayout, state: PredictorState) -> Packed:
    """Boolean vectors like the packed state: True where a non-fresh step still writes."""
    floats, ints = np.zeros(layout.sizes[0], bool), np.zeros(layout.sizes[1], bool)
    for slot, written in zip(layout.slots, jax.tree_util.tree_leaves(freshness_mask(state))):
        if written:
            (floats if slot.kind == "float" else ints)[slot.start : slot.start + slot.size] = True
    return Packed(floats, ints)


def _committed(packed: Packed) -> Packed:
    """``packed`` committed to the device it is on.

    A jitted program is compiled separately for committed and uncommitted arguments, and a
    loaded export's results are committed where a traced program's may not be: every state the
    step sees is committed, so it compiles (or loads) once, whichever made the state.
    """
    return Packed(*(jax.device_put(array, array.sharding) for array in packed))


@functools.lru_cache(maxsize=16)
def _packed_step(config: PredictorConfig, export_dir: Path | None, context: tuple) -> PackedStep:
    return PackedStep(config, export_dir=export_dir, context=dict(context))


def packed_step(config: PredictorConfig, export_dir: Path | None = None) -> PackedStep:
    """The :class:`PackedStep` of one config and export folder for the trace settings in force (cached)."""
    return _packed_step(config, export_dir, tuple(sorted(trace_context().items())))
