"""Run folders: atomic writes, ``meta.json`` with the sha256 of every file, checked on load.

A write goes to a temporary file in the same folder and is renamed over the target, so a reader
never sees half a file and a crash never corrupts what was already saved. Nothing here unpickles:
loading a file never runs code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

META = "meta.json"
_VERSIONED = ("chaosfm", "jax", "jaxlib", "equinox", "optax", "numpy", "pandas", "scipy")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class ArtifactError(RuntimeError):
    """A run folder is missing a file, or a file does not match its recorded hash."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode.
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def nan_to_none(value: Any) -> Any:
    """JSON has no NaN: write null. NumPy scalars become Python numbers, tuples lists."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """JSON with NaN/inf refused (``allow_nan=False``): write ``None`` for a missing number."""
    return atomic_write_text(path, json.dumps(value, indent=2, allow_nan=False, default=str) + "\n")


def write_yaml(path: str | os.PathLike[str], value: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(value, sort_keys=False))


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def machine() -> dict[str, Any]:
    """What the numbers in a run were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def write_meta(
    run_dir: str | os.PathLike[str],
    *,
    seed: int | None,
    trained_through: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``meta.json``: versions, seed, ``trained_through`` and the sha256 of every file."""
    root = Path(run_dir)
    files = {
        str(p.relative_to(root)): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != META and not p.name.startswith(".")
    }
    meta = {
        "versions": versions(),
        "machine": machine(),
        "seed": seed,
        "trained_through": dict(trained_through) if trained_through is not None else None,
        "files": files,
        **dict(extra or {}),
    }
    return write_json(root / META, meta)


def verify_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file listed in ``meta.json`` against its hash; return the meta.

    Raises:
        ArtifactError: naming the missing or damaged file.
    """
    root = Path(run_dir)
    meta_path = root / META
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path}: missing; {root} is not a chaosfm run folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{meta_path}: damaged ({error})") from None
    files = meta.get("files", {})
    if not isinstance(files, dict):
        raise ArtifactError(f"{meta_path}: damaged ('files' must map file names to sha256 hashes)")
    inside = root.resolve()
    for name, expected in files.items():
        path = root / name
        # An entry must name a file of this folder: "../x", "/etc/x" or a symlink out of it would
        # make verify_run hash (and tell the hash of) any file the user can read.
        if not path.resolve().is_relative_to(inside):
            raise ArtifactError(
                f"{meta_path}: files entry {str(name)[:200]!r} points outside the run folder {root}; "
                "every entry must be a file inside it"
            )
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in meta.json but missing")
        if sha256(path) != expected:
            raise ArtifactError(f"{path}: damaged (sha256 does not match meta.json)")
    return meta
