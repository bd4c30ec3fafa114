"""``chaosfm datasets``, ``chaosfm data check``, ``data stage`` and ``data archive``: the built-in
data; a file checked against the validation rules (optionally repaired, optionally written back out
in canonical form); folders copied between a cold tier (an object store, any fsspec URL) and a hot
one (a local disk), every file's sha256 checked (:func:`chaosfm._storage.copy_tree`)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

from chaosfm._artifacts import META, atomic_write_bytes, verify_run
from chaosfm._config import ConfigError
from chaosfm._storage import CopyResult, copy_tree, is_url
from chaosfm.data import datasets as builtin_datasets
from chaosfm.data import describe
from chaosfm.jobs._common import ReadOptions, load_data

__all__ = ["WRITE_SUFFIXES", "archive", "check", "check_finished", "datasets", "stage"]

WRITE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""What ``data check --write`` writes, by the file's extension."""


def datasets() -> pd.DataFrame:
    """Name, kind, rows, range, frequency, source and licence of every built-in dataset."""
    return builtin_datasets()


def check(
    path: str,
    *,
    repair: bool = False,
    write: str | os.PathLike[str] | None = None,
    force: bool = False,
    **reading: Any,
) -> dict[str, Any]:
    """Load ``path`` (a file or a built-in name) through validation; return its summary (kind, rows,
    assets with their ranges, and what ``repair`` did).

    Args:
        path: a file, a folder or a built-in name.
        repair: fix what validation rejects and say what was done.
        write: save the validated (and repaired) frame here, in canonical columns, as CSV or
            Parquet by its extension (``.csv``, ``.parquet``, ``.pq``).
        force: replace ``write`` when it exists (else that is an error).
        **reading: ``sep``, ``decimal``, ``dayfirst``, ``date_format`` (see :class:`ReadOptions`).

    Raises:
        DataError: naming the file, row, line, column and the rule broken.
        ConfigError: ``write`` has another extension, or exists and ``force`` is not given.
    """
    target = None if write is None else Path(write).expanduser()
    if target is not None:
        _check_target(target, force)
    frame = load_data(path, read=ReadOptions(repair=repair, **reading))
    summary = describe(frame)
    if target is not None:
        atomic_write_bytes(target, _encode(frame, WRITE_SUFFIXES[target.suffix.lower()]))
        summary["written"] = str(target)
    return summary


def _check_target(target: Path, force: bool) -> None:
    if target.suffix.lower() not in WRITE_SUFFIXES:
        raise ConfigError(f"--write {target}: give a file ending in {', '.join(WRITE_SUFFIXES)}")
    if target.is_dir():
        raise ConfigError(f"--write {target}: is a folder; give a file")
    if target.exists() and not force:
        raise ConfigError(f"--write {target}: the file exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"--write {target}: the folder {target.parent} does not exist")


def _encode(frame: pd.DataFrame, kind: str) -> bytes:
    """The frame as CSV or Parquet bytes (the frame's attrs, e.g. its time zone, stay out of CSV)."""
    if kind == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    buffer = io.BytesIO()
    plain = frame.copy()
    plain.attrs = {}  # pandas stores attrs as JSON in the file; repairs and parts are not the data's
    plain.to_parquet(buffer, index=False)
    return buffer.getvalue()


def stage(source: str | os.PathLike[str], destination: str | os.PathLike[str], *, force: bool = False) -> CopyResult:
    """Copy the folder ``source`` (cold: ``s3://``, ``gs://``, ``memory://``... or a path) to
    ``destination`` (hot: usually a local disk), each file's sha256 checked; rerun after an
    interruption to copy only what is missing.

    Raises:
        ConfigError: no such source, or ``destination`` holds a complete copy (or files that are
            not a copy) and ``force`` is not given; a filesystem package is missing (named).
        ArtifactError: a file does not match the source's manifest or its source (named).
    """
    return copy_tree(source, destination, what="data stage", force=force)


def archive(source: str | os.PathLike[str], destination: str | os.PathLike[str], *, force: bool = False) -> CopyResult:
    """Copy a finished local run folder or shard folder ``source`` to ``destination`` (cold: any
    fsspec URL), after :func:`check_finished`.

    Raises:
        ConfigError: ``source`` is a URL, is still being written, or is neither a run nor a shard
            folder; ``destination`` must not be overwritten (see :func:`stage`).
        ArtifactError: a file of the run does not match its ``meta.json`` hash (named).
    """
    if is_url(source):
        raise ConfigError(
            f"data archive: source {source} is a URL; archive copies a finished local run or shard folder "
            "(copy between URLs with data stage)"
        )
    folder = Path(source).expanduser()
    check_finished(folder)
    return copy_tree(folder, destination, what="data archive", force=force)


SHARD_INDEX = "index.json"
"""The file a shard folder (``chaosfm shard``) lists its shards in, written last."""

_RUN_FILES = ("metrics.json", META)
"""What every finished run folder holds: the job writes ``metrics.json``, then ``meta.json`` last."""


def check_finished(folder: Path) -> None:
    """A run folder whose job has finished (``metrics.json`` and ``meta.json`` there, no checkpoint
    half written, every hash in ``meta.json`` verified) or a shard folder (with its ``index.json``).

    Raises:
        ConfigError: naming the folder and what is missing or half written.
        ArtifactError: a file does not match its hash in ``meta.json`` (named).
    """
    if not folder.is_dir():
        raise ConfigError(f"data archive: source {folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    missing = [name for name in _RUN_FILES if not (folder / name).is_file()]
    if missing and (folder / SHARD_INDEX).is_file() and not any((folder / name).exists() for name in _RUN_FILES):
        return  # a shard folder: the shard writer writes its index last
    if missing:
        raise ConfigError(
            f"data archive: {folder} is not a finished run folder: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing (is its job still running, or did it stop?); "
            f"a shard folder would hold {SHARD_INDEX}"
        )
    checkpoints = folder / "checkpoints"  # chaosfm.train's checkpoint folders: step_NNNNNNNN/ with meta.json
    partial = sorted(
        p.name for p in (checkpoints.iterdir() if checkpoints.is_dir() else ())
        if p.is_dir() and (p.name.startswith(".step_") or (p.name.startswith("step_") and not (p / META).is_file()))
    )
    if partial:
        raise ConfigError(
            f"data archive: {folder} holds partial checkpoints ({', '.join(partial)} in {checkpoints}); a checkpoint "
            "is still being written, or a run was killed while writing it"
        )
    verify_run(folder)
