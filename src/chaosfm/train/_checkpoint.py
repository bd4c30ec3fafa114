"""Checkpoints: equinox leaves, optimizer state, step and PRNG key, hashed, written atomically.

A checkpoint is a folder ``checkpoints/step_00000100/`` holding ``model.eqx`` and ``opt_state.eqx``
(``eqx.tree_serialise_leaves``: raw NumPy arrays, no pickle), ``state.json`` (step, key data,
anything the caller adds), ``batches.json`` when the run reads a checkpointable batch stream (each
process's stream position, e.g. a Grain iterator's state, so a resumed run continues the same
stream) and ``meta.json`` (versions and the sha256 of each file, from
:func:`chaosfm._artifacts.write_meta`). It is written into a hidden temporary folder and renamed
into place, so a run killed at any moment leaves either the whole checkpoint or none of it.
Loading checks every hash first and names the damaged file; resuming falls back to the newest
checkpoint that is intact (:func:`load_newest_intact`).

The arrays are stored whole, as host NumPy arrays, whatever mesh or process count wrote them (a
multi-process run gathers them to the host first and writes once, from process 0), so a run
resumes on any number of processes and devices with the same ``fsdp`` layout choice (F = 1 or
F > 1: the optimizer state is one raveled vector in the first case, per leaf in the second).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from chaosfm._artifacts import ArtifactError, atomic_write_bytes, verify_run, write_json, write_meta

__all__ = [
    "BATCHES_FILE",
    "Checkpoint",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_newest_intact",
    "save_checkpoint",
]

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.eqx"
OPT_FILE = "opt_state.eqx"
STATE_FILE = "state.json"
BATCHES_FILE = "batches.json"
_NAME = re.compile(r"^step_(\d{8})$")


@dataclass
class Checkpoint:
    """What a checkpoint restores: the step reached and the state after it."""

    step: int
    params: Any
    opt_state: Any
    key: Any
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    batch_states: list[Any] | None = None
    """Each process's batch-stream state, in process order (None: the run had no batch stream)."""


def _serialise(tree: Any) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder counts once it has its meta.json)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of ``step`` lives in ``run_dir`` (written or not)."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    step: int,
    params: Any,
    opt_state: Any,
    key: Any,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
    batch_states: list[Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_{step:08d}`` atomically and keep only the ``keep`` newest.

    Args:
        run_dir: the run folder.
        step: optimizer updates done.
        params: the trainable leaves (``eqx.partition(model, eqx.is_inexact_array)[0]``).
        opt_state: the optax state.
        key: the run's PRNG key after ``step`` updates (a typed key).
        seed: recorded in meta.json.
        extra: JSON-ready values stored in state.json.
        keep: how many checkpoints to keep.
        batch_states: JSON-ready state of each process's batch stream, in process order, stored in
            ``batches.json`` (hashed in meta.json like the other files).
    """
    final = checkpoint_path(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        atomic_write_bytes(temporary / MODEL_FILE, _serialise(params))
        atomic_write_bytes(temporary / OPT_FILE, _serialise(opt_state))
        key_data = np.asarray(jax.random.key_data(key))
        state = {
            "step": int(step),
            "key_data": key_data.astype(np.uint64).tolist(),
            "key_impl": str(jax.random.key_impl(key)),
            **dict(extra or {}),
        }
        write_json(temporary / STATE_FILE, state)
        if batch_states is not None:
            write_json(temporary / BATCHES_FILE, {"processes": list(batch_states)})
        write_meta(temporary, seed=seed, extra={"step": int(step)})
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=root))
            os.replace(final, trash / final.name)
            os.replace(temporary, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_directory(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_directory(path: Path) -> None:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_partial_checkpoints(run_dir: str | os.PathLike[str]) -> None:
    """Delete the hidden temporary folders a killed run may have left behind."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for leftover in root.glob(".step_*"):
            shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike[str], *, params_like: Any, opt_state_like: Any) -> Checkpoint:
    """Restore a checkpoint into pytrees shaped like ``params_like`` and ``opt_state_like``.

    Raises:
        ArtifactError: a file is missing, its sha256 does not match meta.json, or it does not fit
            the model (the message names the file).
    """
    folder = Path(path)
    verify_run(folder)
    state_path = folder / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{state_path}: damaged ({error})") from None
    trees = []
    for name, like in ((MODEL_FILE, params_like), (OPT_FILE, opt_state_like)):
        file = folder / name
        try:
            with open(file, "rb") as stream:
                trees.append(eqx.tree_deserialise_leaves(stream, like))
        except Exception as error:  # a shape or dtype that does not fit, a truncated array
            raise ArtifactError(
                f"{file}: cannot be restored into this model ({type(error).__name__}: {error}); "
                f"was it written by a run with a different model config?"
            ) from None
    try:
        impl = state.get("key_impl")
        key_data = np.asarray(state["key_data"], dtype=np.uint32)
        key = jax.random.wrap_key_data(key_data, impl=impl) if impl else jax.random.wrap_key_data(key_data)
        step = int(state["step"])
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{state_path}: damaged ({type(error).__name__}: {error})") from None
    extra = {k: v for k, v in state.items() if k not in ("step", "key_data", "key_impl")}
    batch_states = None
    batches_path = folder / BATCHES_FILE
    if batches_path.is_file():
        try:
            batch_states = json.loads(batches_path.read_text())["processes"]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ArtifactError(f"{batches_path}: damaged ({type(error).__name__}: {error})") from None
        if not isinstance(batch_states, list):
            raise ArtifactError(f"{batches_path}: damaged ('processes' must be a list, one state per process)")
    return Checkpoint(step=step, params=trees[0], opt_state=trees[1], key=key, path=folder, extra=extra,
                      batch_states=batch_states)


def load_newest_intact(
    run_dir: str | os.PathLike[str], *, params_like: Any, opt_state_like: Any
) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint of ``run_dir`` that loads, and why each newer one did not.

    A damaged newest checkpoint (a disk error, a file edited by hand) must not block a resume
    while an older one is intact: the run repeats the steps between them instead.

    Returns:
        ``(checkpoint, skipped)``: ``checkpoint`` is None when the run has none; ``skipped`` holds
        one ``"step_<number>: reason"`` per newer checkpoint passed over.

    Raises:
        ArtifactError: every checkpoint is damaged or does not fit the model (each one named).
    """
    skipped: list[str] = []
    for folder in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(folder, params_like=params_like, opt_state_like=opt_state_like), skipped
        except ArtifactError as error:
            skipped.append(f"{folder.name}: {error}")
    if skipped:
        raise ArtifactError(f"{Path(run_dir)}: no checkpoint can be restored: " + "; ".join(skipped))
    return None, skipped
