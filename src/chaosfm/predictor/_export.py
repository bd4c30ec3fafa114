"""Traced programs kept on disk with ``jax.export``, so a restart neither traces nor compiles.

JAX's persistent compilation cache (``_warm.py``) saves the compile, not the trace: to look an
executable up, a fresh process must first trace the Python function and lower it to StableHLO,
about a second for the predictor's step, init and warm start together. :class:`ExportCache`
keeps each program's ``jax.export.Exported`` (its StableHLO plus the calling convention) in a
folder beside that cache; :func:`program` loads it instead of tracing, and the compilation cache
then serves the executable. A program run from a loaded export computes the same bits as the
traced function (tests/predictor/test_export.py, test_packed_step.py).

Keys. A file is found by a key over everything that changes the traced program: the program's
name, the predictor config (which fixes its argument shapes), the JAX settings that shape a trace
(:func:`trace_context`: x64, matmul precision, PRNG implementation, partitionable threefry,
dtype promotion, backend), the versions of chaosfm, jax, jaxlib and of the libraries traced
into the program, and a hash of the predictor's source files, so editing the code never loads
a stale program.

Files. A msgpack document ``{"format", "format_version", "name", "key", "sha256", "payload"}``
whose payload holds ``jax.export``'s own serialisation of the program (``Exported.serialize()``:
a flatbuffer with the calling convention and the StableHLO module as portable MLIR bytecode) and
the program's host-side layout. Loading never runs code: msgpack has no object hooks here, the
flatbuffer is data, and the module is MLIR bytecode that XLA compiles, not Python (no pickle
anywhere). ``jax.export.deserialize`` only sees bytes whose sha256 matches the document. A
missing, damaged, truncated, mismatched or unreadable file is ignored: the program is traced and
the file rewritten (atomically: temp file + rename).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import jax
import msgpack
import numpy as np

from chaosfm._artifacts import atomic_write_bytes
from chaosfm.predictor._config import PredictorConfig

FORMAT = "chaosfm-jax-export"
FORMAT_VERSION = 1
SUFFIX = ".jaxexport"
# Libraries whose code is traced into the predictor's programs (or computes their constants).
_TRACED_PACKAGES = ("chaosfm", "jax", "jaxlib", "ott-jax", "signax", "optax", "PyWavelets", "numpy")


class Stored(NamedTuple):
    exported: jax.export.Exported
    aux: dict[str, Any]  # the program's host-side layout, as written beside it


def trace_context() -> dict[str, Any]:
    """The JAX settings in force here that change what a trace produces (JSON values)."""
    return {
        "x64": bool(jax.config.jax_enable_x64),
        "matmul_precision": jax.config.jax_default_matmul_precision,
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "dtype_promotion": str(jax.config.jax_numpy_dtype_promotion),
        "backend": jax.default_backend(),
    }


@contextlib.contextmanager
def trace_settings(context: Mapping[str, Any]) -> Iterator[None]:
    """Re-enter ``context``'s thread-local settings (in another thread: they do not follow).

    x64 and the backend are process-wide; the others are scoped, and a program traced in a
    warm-up thread must be traced as its key says.
    """
    with (
        jax.default_matmul_precision(context["matmul_precision"]),
        jax.default_prng_impl(context["prng_impl"]),
        jax.threefry_partitionable(context["threefry_partitionable"]),
        jax.numpy_dtype_promotion(context["dtype_promotion"]),
    ):
        yield


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """sha256 over the predictor's source files (names and bytes): any edit changes every key."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    found = []
    for name in _TRACED_PACKAGES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, "absent"))
    return tuple(found)


def export_key(
    name: str,
    config: PredictorConfig,
    *,
    context: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """sha256 (hex) naming program ``name`` of ``config`` traced in ``context``.

    The config fixes every argument shape of the predictor's programs (a loaded export brings
    them; they are checked by lowering it), so shapes are not key material of their own.

    Args:
        name: the program ("init", "step", "warm_start").
        config: the predictor config the program closes over.
        context: the trace settings; the current :func:`trace_context` by default.
        extra: anything else the trace depends on (the implementation of a key argument).
    """
    material = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "config": config.model_dump(mode="json"),
        "context": dict(trace_context() if context is None else context),
        "versions": dict(_versions()),
        "source": _source_digest(),
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ExportCache:
    """A folder of exported programs, one file per key (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, name: str, key: str) -> Path:
        return self.directory / f"{name}-{key[:40]}{SUFFIX}"

    def load(self, name: str, key: str) -> Stored | None:
        """The program stored under ``key``, or None if absent or unusable (never raises for that)."""
        try:
            raw = self.path(name, key).read_bytes()
        except OSError:
            return None
        try:
            document = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                return None
            if document.get("format_version") != FORMAT_VERSION or document.get("key") != key:
                return None
            payload = document["payload"]
            if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != document["sha256"]:
                return None
            body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
            return Stored(jax.export.deserialize(bytearray(body["exported"])), dict(body["aux"]))
        except Exception:  # noqa: BLE001 - any damage means "not cached": trace and rewrite
            return None

    def save(self, name: str, key: str, exported: jax.export.Exported, aux: Mapping[str, Any]) -> Path | None:
        """Write ``exported`` under ``key`` atomically; None if the cache cannot be written."""
        payload = msgpack.packb({"exported": bytes(exported.serialize()), "aux": dict(aux)}, use_bin_type=True)
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "key": key,
                    "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return atomic_write_bytes(self.path(name, key), msgpack.packb(document, use_bin_type=True))
        except OSError:  # a read-only or full cache: the program runs all the same, uncached
            return None


class Program(NamedTuple):
    function: Callable[..., Any]  # jitted
    specs: tuple[jax.ShapeDtypeStruct, ...]  # its arguments
    aux: dict[str, Any]  # what ``aux`` returned when it was traced (or was stored beside it)
    status: str  # "traced" (no cache), "loaded" (from the cache) or "exported" (traced and written)


def program(
    name: str,
    function: Callable[..., Any],
    specs: Callable[[], tuple[Any, ...]],
    *,
    config: PredictorConfig,
    cache: ExportCache | None,
    context: Mapping[str, Any] | None = None,
    aux: Callable[[], Mapping[str, Any]] = dict,
    extra: Mapping[str, Any] | None = None,
    committed: Sequence[bool] = (),
    **jit_options: Any,
) -> Program:
    """``function`` jitted; with a ``cache``, its export loaded from there or traced and written.

    Args:
        name, function: the program: a pure function of flat arrays returning a tuple of arrays.
        specs: returns its argument shapes and dtypes; called only if it must be traced (a
            loaded export brings its own: the key fixes them through the config).
        config: the predictor config it closes over (part of the key).
        cache: where exports live; None: plain ``jax.jit``, traced here.
        context: the trace settings it is traced under (:func:`trace_context`, the default).
        aux: called after tracing; what it returns (msgpack values) is stored beside the export
            and returned when it is loaded: the host needs the program's layouts without a trace.
        extra: more key material (see :func:`export_key`): whatever the trace depends on that
            ``config`` and :func:`trace_context` do not fix.
        committed: per argument, whether calls pass it as an array committed to the default
            device (else a host value or an uncommitted array): a loaded program is lowered here
            for exactly that signature, so a module that does not parse is caught now and the
            first call reuses the lowering.
        **jit_options: passed to ``jax.jit`` (donation, compiler options).
    """
    if cache is not None:
        key = export_key(name, config, context=context, extra=extra)
        stored = cache.load(name, key)
        if stored is not None:
            loaded = jax.jit(stored.exported.call, **jit_options)
            arguments = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in stored.exported.in_avals)
            device = jax.device_put(np.float32(0)).sharding  # where uncommitted arrays go
            flags = [*committed, *[False] * (len(arguments) - len(committed))]
            placed = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device) if on else a
                      for a, on in zip(arguments, flags, strict=True)]
            try:
                loaded.lower(*placed)
                return Program(loaded, arguments, stored.aux, "loaded")
            except Exception:  # noqa: BLE001 - a module this jax cannot read: trace and rewrite
                pass
    arguments = tuple(jax.ShapeDtypeStruct(s.shape, s.dtype) for s in specs())
    if cache is None:
        jitted = jax.jit(function, **jit_options)
        jitted.trace(*arguments)  # so that ``aux`` can read what the trace left behind
        return Program(jitted, arguments, dict(aux()), "traced")
    exported = jax.export.export(jax.jit(function))(*arguments)
    stored_aux = dict(aux())
    cache.save(name, key, exported, stored_aux)
    return Program(jax.jit(exported.call, **jit_options), arguments, stored_aux, "exported")
