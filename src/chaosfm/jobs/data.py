"""``chaosfm datasets`` and ``chaosfm data check``: the built-in data, and a file checked against
the validation rules (optionally repaired, optionally written back out in canonical form)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

from chaosfm._artifacts import atomic_write_bytes
from chaosfm._config import ConfigError
from chaosfm.data import datasets as builtin_datasets
from chaosfm.data import describe
from chaosfm.jobs._common import ReadOptions, load_data

__all__ = ["WRITE_SUFFIXES", "check", "datasets"]

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
