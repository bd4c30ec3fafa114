"""Predictor snapshots: the whole state in one msgpack file, checked before anything is loaded.

A snapshot holds the :class:`PredictorState` (orchestrator weights, signal buffers, CUSUM state,
Hölder cache, kernel parameters and caches, the PRNG key), the :class:`PredictorConfig` it belongs
to, the versions of jax/ott/signax/chaosfm that wrote it and, for ``run_stream``, the stream's
host-side progress (:class:`StreamProgress`) so that a restored run continues exactly where the
saved one stopped.

File layout (msgpack map)::

    {"format": "chaosfm-predictor-snapshot", "format_version": 2,
     "sha256": hex digest of payload, "payload": bytes}

``payload`` is itself msgpack: ``config`` (JSON-like dict), ``versions``, ``dtype`` (the state's
float dtype: ``float32``, or ``float64`` when written with x64 on; a file without it is float32),
``state`` (one entry per leaf: its pytree path such as ``.cusum.sigma``, dtype name, shape and raw
little-endian bytes; a PRNG key leaf stores its key data and implementation name) and ``stream``. Nothing is pickled and
no hook runs while decoding, so loading never executes code from the file. Loading checks, in
order, the format name, the format version, the checksum, that the state's float dtype is the one
this process computes in, and that every leaf path, dtype and shape equals what
``init_predictor(config)`` produces; any failure is one :class:`SnapshotError` naming the file and
the rule broken, and nothing is returned.

A float64 snapshot is refused by a float32 process and the other way round, rather than converted:
float64 to float32 rounds away what x64 was turned on to keep (a level near 1e8 loses its last
digits), and float32 to float64 would pass off a float32 history as float64. Restore with the
setting it was written with (``--x64`` or ``CHAOSFM_X64=1`` for float64).
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import jax
import msgpack
import numpy as np
from pydantic import ValidationError

from chaosfm._artifacts import ArtifactError, atomic_write_bytes, versions
from chaosfm._config import float_dtype
from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._predictor import PredictorState, init_predictor

FORMAT = "chaosfm-predictor-snapshot"
# 2: PredictorState gained stale_steps, fresh_steps and degraded (degraded_inference). Version 1
# files cannot be read: their state lacks those leaves and their flags meant other things.
FORMAT_VERSION = 2
# Leaf dtypes a snapshot may name: anything else is refused before numpy sees it.
_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                     "float16", "float32", "float64"})
_VERSIONED = ("jax", "jaxlib", "ott-jax", "signax", "chaosfm")


class SnapshotError(ArtifactError):
    """A snapshot file is unreadable, damaged, of another format version, or of another state."""


class StreamProgress(NamedTuple):
    """Host-side state of ``run_stream`` that a restored run needs to continue bit-identically."""

    line: int  # line (1-based row) of the last observation consumed
    timestamp: str | None  # its timestamp, checked against the series on resume
    steps: int  # predictor steps taken (observations after the first)
    started: bool  # the DGM warm start has run
    key: jax.Array  # run_stream's remaining key (the warm start's), typed
    previous_value: float  # the last observation
    previous_samples: np.ndarray | None  # (S,) samples of the last prediction, scored next
    last_prediction: dict[str, Any] | None  # the last prediction row, scored against the next value
    calibration_levels: np.ndarray | None = None  # (L,) adaptive conformal levels (calibration_gamma > 0)
    previous_quantiles: np.ndarray | None = None  # (L,) the last prediction's quantiles at those levels


class Snapshot(NamedTuple):
    state: PredictorState
    config: PredictorConfig
    stream: StreamProgress | None
    versions: dict[str, str]
    format_version: int


def save_snapshot(
    state: PredictorState,
    path: str | os.PathLike[str],
    *,
    config: PredictorConfig,
    stream: StreamProgress | None = None,
) -> Path:
    """Write ``state`` (of ``config``) and optional stream progress to ``path`` atomically.

    The previous file at ``path`` stays intact until the new one is complete (temp file + rename).
    """
    state = jax.device_get(state)
    payload = {
        "config": config.model_dump(mode="json"),
        "versions": _versions(),
        "dtype": np.dtype(state.last.dtype).name,
        "state": [_encode_leaf(jax.tree_util.keystr(p), leaf)
                  for p, leaf in jax.tree_util.tree_flatten_with_path(state)[0]],
        "stream": None if stream is None else _encode_stream(stream),
    }
    body = msgpack.packb(payload, use_bin_type=True)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(body).hexdigest(),
        "payload": body,
    }
    return atomic_write_bytes(path, msgpack.packb(document, use_bin_type=True))


def load_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and check a snapshot; see the module docstring for what is checked.

    Raises:
        SnapshotError: naming ``path`` and what is wrong (nothing is loaded).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SnapshotError(f"{path}: cannot read the snapshot ({error.strerror or error})") from None
    document = _unpack(path, raw, "file")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not a chaosfm predictor snapshot (no format {FORMAT!r})")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: snapshot format version {version!r} found, version {FORMAT_VERSION} expected: this chaosfm"
            f" reads version {FORMAT_VERSION} only; rerun the stream without --restore (or with the chaosfm"
            " that wrote the file) to make a new snapshot"
        )
    body, digest = document.get("payload"), document.get("sha256")
    if not isinstance(body, bytes) or not isinstance(digest, str):
        raise SnapshotError(f"{path}: damaged snapshot (payload or checksum missing)")
    if hashlib.sha256(body).hexdigest() != digest:
        raise SnapshotError(f"{path}: checksum mismatch: the snapshot is damaged (sha256 of the payload differs)")
    payload = _unpack(path, body, "payload")
    try:
        return _decode(path, payload)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as error:  # a well-formed file of the wrong shape
        raise SnapshotError(f"{path}: malformed snapshot payload ({type(error).__name__}: {error})") from None


def _versions() -> dict[str, str]:
    found = versions()
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _unpack(path: Path, data: bytes, what: str) -> Any:
    try:
        # No ext_hook/object_hook: ext types stay inert ExtType values and are rejected below.
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as error:  # noqa: BLE001 - msgpack raises several unrelated types on damage
        raise SnapshotError(
            f"{path}: damaged or truncated snapshot ({what} is not valid msgpack: {type(error).__name__})"
        ) from None


def _encode_array(value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": np.ascontiguousarray(little).tobytes()}


def _decode_array(entry: dict[str, Any], where: str) -> np.ndarray:
    dtype, shape, data = entry["dtype"], entry["shape"], entry["data"]
    if dtype not in _DTYPES:
        raise SnapshotError(f"{where}: dtype {dtype!r} is not one a snapshot may hold")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise SnapshotError(f"{where}: bad shape {shape!r}")
    kind = np.dtype(dtype).newbyteorder("<")
    if not isinstance(data, bytes) or len(data) != kind.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise SnapshotError(f"{where}: {len(data) if isinstance(data, bytes) else 'no'} bytes for {dtype}{shape}")
    return np.frombuffer(data, kind).reshape(shape).astype(np.dtype(dtype))


def _encode_leaf(path: str, leaf: Any) -> dict[str, Any]:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        entry = _encode_array(jax.random.key_data(leaf))
        entry.update(path=path, key=str(leaf.dtype), impl=str(jax.random.key_impl(leaf)))
        return entry
    return {"path": path, **_encode_array(leaf)}


def _decode_state(path: Path, config: PredictorConfig, leaves: list[dict[str, Any]]) -> PredictorState:
    """Rebuild the state, checking it against what ``init_predictor(config)`` produces."""
    template = jax.eval_shape(lambda k: init_predictor(config, 1.0, key=k), jax.random.key(0))
    expected, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in expected]
    stored = [entry["path"] for entry in leaves]
    if stored != names:
        missing, extra = sorted(set(names) - set(stored)), sorted(set(stored) - set(names))
        raise SnapshotError(
            f"{path}: the stored state does not fit this chaosfm's PredictorState"
            f" (missing {missing[:5]}, unexpected {extra[:5]}{', different order' if not missing and not extra else ''})"
        )
    values = []
    for (_, want), entry in zip(expected, leaves):
        where = f"{path}: leaf {entry['path']}"
        array = _decode_array(entry, where)
        if jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            if entry.get("key") != str(want.dtype):
                raise SnapshotError(f"{where}: key type {entry.get('key')!r}, expected {want.dtype}")
            key = jax.random.wrap_key_data(array, impl=entry["impl"])
            if str(key.dtype) != str(want.dtype):
                raise SnapshotError(f"{where}: key implementation {entry['impl']!r} makes {key.dtype}, expected {want.dtype}")
            values.append(key)
            continue
        if array.dtype != want.dtype or tuple(array.shape) != tuple(want.shape):
            raise SnapshotError(f"{where}: {array.dtype}{list(array.shape)}, expected {want.dtype}{list(want.shape)}")
        values.append(jax.numpy.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, values)


def _encode_stream(stream: StreamProgress) -> dict[str, Any]:
    return {
        "line": int(stream.line),
        "timestamp": None if stream.timestamp is None else str(stream.timestamp),
        "steps": int(stream.steps),
        "started": bool(stream.started),
        "key": _encode_array(jax.random.key_data(stream.key)),
        "key_impl": str(jax.random.key_impl(stream.key)),
        "previous_value": float(stream.previous_value),
        "previous_samples": None if stream.previous_samples is None else _encode_array(stream.previous_samples),
        **{name: None if getattr(stream, name) is None else _encode_array(np.asarray(getattr(stream, name)))
           for name in ("calibration_levels", "previous_quantiles")},
        "last_prediction": None if stream.last_prediction is None else {
            k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in stream.last_prediction.items()
        },
    }


def _decode_stream(path: Path, entry: dict[str, Any]) -> StreamProgress:
    samples = entry["previous_samples"]
    return StreamProgress(
        line=int(entry["line"]),
        timestamp=entry["timestamp"],
        steps=int(entry["steps"]),
        started=bool(entry["started"]),
        key=jax.random.wrap_key_data(_decode_array(entry["key"], f"{path}: stream key"), impl=entry["key_impl"]),
        previous_value=float(entry["previous_value"]),
        previous_samples=None if samples is None else _decode_array(samples, f"{path}: stream samples"),
        last_prediction=entry["last_prediction"],
        **{name: None if entry.get(name) is None else _decode_array(entry[name], f"{path}: stream {name}")
           for name in ("calibration_levels", "previous_quantiles")},
    )


def _decode(path: Path, payload: dict[str, Any]) -> Snapshot:
    try:
        config = PredictorConfig.model_validate(payload["config"])
    except ValidationError as error:
        raise SnapshotError(f"{path}: the stored predictor config is invalid: {error}") from None
    _check_dtype(path, payload.get("dtype", "float32"))
    state = _decode_state(path, config, payload["state"])
    stream = None if payload["stream"] is None else _decode_stream(path, payload["stream"])
    return Snapshot(state, config, stream, dict(payload["versions"]), FORMAT_VERSION)


def _check_dtype(path: Path, stored: Any) -> None:
    """Refuse a state of another float dtype than this process computes in (see the module docstring)."""
    here = np.dtype(float_dtype()).name
    if stored == here:
        return
    how = ("with x64 on (--x64 or CHAOSFM_X64=1)" if stored == "float64"
           else "without --x64 and with CHAOSFM_X64 unset" if stored == "float32" else None)
    if how is None:
        raise SnapshotError(f"{path}: state dtype {stored!r} is not one a predictor state has (float32 or float64)")
    raise SnapshotError(
        f"{path}: the snapshot holds a {stored} state but this process computes in {here}; a snapshot is"
        f" not converted between dtypes: restore it {how}, as it was written"
    )
