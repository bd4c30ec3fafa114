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

Files. A msgpack document ``{"format", "format_version", "name", "key", "sha256", "hmac",
"payload"}`` whose payload holds ``jax.export``'s own serialisation of the program
(``Exported.serialize()``: a flatbuffer with the calling convention and the StableHLO module as
portable MLIR bytecode) and the program's host-side layout. Loading never runs Python: msgpack
has no object hooks here, the flatbuffer is data, and the module is MLIR bytecode that XLA
compiles (no pickle anywhere). A missing, damaged, truncated, mismatched or unreadable file is
ignored: the program is traced and the file rewritten (atomically: temp file + rename).

Trust. The sha256 only catches damage: anyone can recompute it. What XLA compiles from a module
runs as this user, and a module can name a ``custom_call`` target that calls into the host (a
Python callback: with a planted pointer, a crash or worse). So a file is loaded only if

- its folder is private (``_cache.py``: this user's, writable by nobody else);
- its ``hmac`` (HMAC-SHA256 over format, version, name, key and payload, under the user's secret
  :func:`~chaosfm.predictor._cache.cache_secret`) verifies: only this user's chaosfm wrote it. The
  file name is an HMAC of the key too, so another user cannot even tell which file a run reads;
- its program passes :func:`refusal`: every ``custom_call`` target on :data:`ALLOWED_CUSTOM_CALLS`
  (the predictor's own programs use none on CPU), no safety check disabled, no side effects.

A file failing a check is never deserialised into a callable: it is ignored (said once on stderr)
and the program traced again. A program that would fail :func:`refusal` is not written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import jax
import msgpack
import numpy as np

from chaosfm._artifacts import atomic_write_bytes
from chaosfm.predictor._cache import UnsafeCacheError, cache_secret, key_path, note_once, private_directory
from chaosfm.predictor._config import PredictorConfig

FORMAT = "chaosfm-jax-export"
FORMAT_VERSION = 2  # 2: signed (hmac), file named by an HMAC of the key
SUFFIX = ".jaxexport"
# Libraries whose code is traced into the predictor's programs (or computes their constants).
_TRACED_PACKAGES = ("chaosfm", "jax", "jaxlib", "ott-jax", "signax", "optax", "PyWavelets", "numpy")


ALLOWED_CUSTOM_CALLS: frozenset[str] = frozenset()
"""``custom_call`` targets a loaded program may name: those the predictor's own programs use.

On CPU its init, step and warm start use none (tests/predictor/test_export.py exports the real
ones and checks). A callback target (``xla_ffi_python_cpu_callback``, ``xla_python_cpu_callback``)
calls host code through a pointer in the module and must never be added. A program needing a
target not listed here is simply traced each run, never loaded."""


def custom_call_targets(exported: jax.export.Exported) -> set[str]:
    """The ``custom_call`` targets of every op in ``exported``'s module (one it cannot read: ``"?"``).

    The module is walked op by op (MLIR's own parser; locations and names play no part), so a
    target cannot hide in a form a text search would miss.
    """
    from jax.extend import mlir as jax_mlir
    from jax.extend.mlir import ir

    found: set[str] = set()

    def visit(op: Any) -> Any:
        if op.name.rsplit(".", 1)[-1] == "custom_call":  # stablehlo's, or any dialect's
            try:
                found.add(ir.StringAttr(op.attributes["call_target_name"]).value)
            except (KeyError, ValueError, TypeError):
                found.add("?")
        return ir.WalkResult.ADVANCE

    with ir.Context() as context:
        context.allow_unregistered_dialects = True  # parsed generically: ops keep their names
        module = jax_mlir.deserialize_portable_artifact(exported.mlir_module_serialized, context)
        module.operation.walk(visit)
    return found


def refusal(exported: jax.export.Exported) -> str | None:
    """Why ``exported`` must not be run from a file, or None: a target not on
    :data:`ALLOWED_CUSTOM_CALLS`, a disabled export safety check, or an effect (the predictor's
    programs are pure)."""
    unknown = sorted(custom_call_targets(exported) - ALLOWED_CUSTOM_CALLS)
    if unknown:
        return f"custom_call targets {unknown} are not among those the predictor uses {sorted(ALLOWED_CUSTOM_CALLS)}"
    if exported.disabled_safety_checks:
        return f"it disables export safety checks {list(map(str, exported.disabled_safety_checks))}"
    if exported.ordered_effects or exported.unordered_effects:
        return "it has side effects; the predictor's programs have none"
    return None


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


def _tag(secret: bytes, name: str, key: str, payload: bytes) -> str:
    """HMAC-SHA256 (hex) binding a payload to its program, key and format."""
    message = msgpack.packb([FORMAT, FORMAT_VERSION, name, key, payload], use_bin_type=True)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class ExportCache:
    """A folder of signed exported programs, one file per key (see the module docstring).

    Args:
        directory: the folder (created 0700 on the first write; used only while private).
        secret: the HMAC key; by default the user's (:func:`~chaosfm.predictor._cache.cache_secret`),
            read on first use. If that is refused (not private), nothing is loaded or written.
    """

    def __init__(self, directory: str | Path, *, secret: bytes | None = None):
        self.directory = Path(directory)
        self._secret = secret

    def secret(self) -> bytes | None:
        if self._secret is None:
            try:
                self._secret = cache_secret()
            except (UnsafeCacheError, OSError) as error:
                note_once(f"{error}; the predictor's exported programs are neither loaded nor written")
                return None
        return self._secret

    def path(self, name: str, key: str, secret: bytes) -> Path:
        digest = hmac.new(secret, f"{name}\0{key}".encode(), hashlib.sha256).hexdigest()
        return self.directory / f"{name}-{digest[:40]}{SUFFIX}"

    def _private(self) -> bool:
        try:
            private_directory(self.directory, "export directory")
            return True
        except UnsafeCacheError as error:
            note_once(f"{error}; the predictor's exported programs there are neither loaded nor written")
        except OSError:  # cannot be made (a read-only cache): nothing there to trust or write
            pass
        return False

    def load(self, name: str, key: str) -> Stored | None:
        """The program stored under ``key``, or None if absent, unusable or untrusted (never raises
        for that)."""
        secret = self.secret()
        if secret is None or not self.directory.is_dir() or not self._private():
            return None
        path = self.path(name, key, secret)
        try:
            raw = path.read_bytes()
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
            tag = document.get("hmac")
            if not isinstance(tag, str) or not hmac.compare_digest(tag, _tag(secret, name, key, payload)):
                note_once(f"{path}: its HMAC does not verify under {key_path()}: not written by this user's"
                          " chaosfm (or the key changed); not loaded, the program is traced again")
                return None
            body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
            exported = jax.export.deserialize(bytearray(body["exported"]))
            reason = refusal(exported)
            if reason is not None:
                note_once(f"{path}: refused ({reason}); not loaded, the program is traced again")
                return None
            return Stored(exported, dict(body["aux"]))
        except Exception:  # noqa: BLE001 - any damage means "not cached": trace and rewrite
            return None

    def save(self, name: str, key: str, exported: jax.export.Exported, aux: Mapping[str, Any]) -> Path | None:
        """Write ``exported`` under ``key`` atomically, signed; None if the cache cannot be written
        (or must not be: not private, no key, or a program :func:`refusal` would not load)."""
        reason = refusal(exported)
        if reason is not None:
            note_once(f"program {name!r} is not cached: {reason}")
            return None
        secret = self.secret()
        if secret is None or not self._private():
            return None
        payload = msgpack.packb({"exported": bytes(exported.serialize()), "aux": dict(aux)}, use_bin_type=True)
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "key": key,
                    "sha256": hashlib.sha256(payload).hexdigest(), "hmac": _tag(secret, name, key, payload),
                    "payload": payload}
        try:
            return atomic_write_bytes(self.path(name, key, secret), msgpack.packb(document, use_bin_type=True))
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
