"""``load(name_or_path)``: one validated frame from a built-in dataset, a CSV or a Parquet file, or a folder of them."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from chaosfm._config import did_you_mean
from chaosfm._progress import status
from chaosfm.data._builtin import MARKET, market_frame
from chaosfm.data._errors import DataError, EmptyDataError, FileFormatError, UnknownDatasetError
from chaosfm.data._frame import frame_kind, validate
from chaosfm.data._trajectory import time_metadata

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SEPARATORS = ",;\t|"
"""What ``read_file`` sniffs a CSV file's separator among when none is given."""
_SNIFF_BYTES = 64 * 1024
_DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+\s*$")
READ_OPTIONS = ("sep", "decimal", "dayfirst", "date_format")
"""How a file is read (``load`` options of files; built-in datasets are already parsed)."""
# What datasets() lists for a chaotic system beyond what every dataset has.
_SYSTEM_COLUMNS = ("dynamics", "dimension", "lyapunov_reference", "period")


def _chaos():
    from chaosfm.data import _chaos

    return _chaos


def builtin_names() -> list[str]:
    """Names ``load`` accepts without a path: market datasets first, then chaotic systems."""
    return [*MARKET, *_chaos().SYSTEMS]


def load(name_or_path: str | os.PathLike[str], *, repair: bool = False, **options: Any) -> pd.DataFrame:
    """Load a built-in dataset or a user's file as one validated long-format frame.

    Args:
        name_or_path: a built-in name (``sp500``, ``nasdaq``, ``ndx``, ``n225``, ``jkse``, or a
            chaotic system of ``chaosfm.data.SYSTEMS`` such as ``lorenz63``; see ``datasets()``),
            several joined by commas (``"sp500,nasdaq"``: one frame, one asset each), the path
            of a folder (each CSV or Parquet file in it, one asset each named by its stem unless
            the file has an asset column), or the path of a CSV or Parquet file (Yahoo, Nixtla ``unique_id, ds, y`` and Chronos ``item_id,
            timestamp, target`` layouts load as they are; column names match case-insensitively).
        repair: fix what validation would reject and say what was done (see ``validate``).
        **options: for chaotic systems ``length``, ``dt``, ``points_per_period``, ``seed``,
            ``initial_condition``, ``burn_in`` and the system's parameters; for files ``asset``
            (the name of a file's single asset when it has no asset column; default: the file's
            stem), and how to read them: ``sep`` (default: sniffed among ``, ; tab |``),
            ``decimal`` (default ``.``; ``,`` when a ``;`` file's numbers are written ``1,5``),
            ``dayfirst`` (``03/04/2024`` is 3 April) and ``date_format`` (a ``strftime`` format).
            These four are ignored by built-in datasets, which are parsed already.

    Returns:
        The validated frame; ``frame.attrs`` carries ``name``, ``kind``, ``source``, ``licence``
        and, for chaotic systems, ``lyapunov_exponent``, ``dt``, ``integrator`` and tolerances;
        a trajectory file's ``lyapunov_exponent`` and ``dt`` come from its ``NAME.json`` sidecar
        (or a pandas Parquet file's own attrs), when it has them.

    Raises:
        DataError: a subclass naming the file (or dataset), the row and the rule broken.
    """
    text = os.fspath(name_or_path)
    reading = {k: options.pop(k) for k in READ_OPTIONS if k in options}
    if "," in text and not Path(text).exists():
        names = [part.strip() for part in text.split(",") if part.strip()]
        return _combine(text, names, [load(name, repair=repair, **options, **reading) for name in names])
    folder = Path(text).expanduser()
    if folder.is_dir():
        # A folder of a universe: each CSV or Parquet file in it (not in subfolders), one asset
        # each named by its stem unless the file has its own asset column.
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_CSV_SUFFIXES + _PARQUET_SUFFIXES))
        if not files:
            raise FileFormatError(
                f"a folder with no CSV or Parquet file in it ({', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)})",
                source=str(folder),
            )
        if "asset" in options:
            raise DataError("option 'asset' names one file's asset; a folder's files are named by their stems",
                            source=str(folder), rule="known options")
        return _combine(text, [p.name for p in files],
                        [load(p, repair=repair, **options, **reading) for p in files])
    key = text.strip().lower()
    if key in MARKET:
        _no_options(key, options, allowed=())
        raw = market_frame(key)
        attrs = dict(raw.attrs)
        frame = validate(raw, key, repair=repair)
        attrs["repairs"] = attrs.get("repairs", []) + frame.attrs.get("repairs", [])
        frame.attrs = attrs
        return frame
    chaos = _chaos()
    if key in chaos.SYSTEMS:
        with status(f"integrating {key} and measuring its Lyapunov exponent"):
            raw = chaos.chaotic_system(key, **options)
        attrs = dict(raw.attrs)
        frame = validate(raw, key, repair=repair)
        frame.attrs = {**attrs, "repairs": frame.attrs.get("repairs", [])}
        return frame
    path = Path(text).expanduser()
    if not path.exists():
        raise UnknownDatasetError(
            f"no built-in dataset and no file of that name{did_you_mean(text, builtin_names())}; built-ins are "
            f"{', '.join(builtin_names())}",
            source=text,
        )
    asset = options.pop("asset", None)
    _no_options(text, options, allowed=("asset", "repair", *READ_OPTIONS))
    raw, line_offset = read_file(path, sep=reading.get("sep"), decimal=reading.get("decimal"))
    frame = validate(
        raw, str(path), repair=repair, line_offset=line_offset, default_asset=asset or _stem(path),
        dayfirst=bool(reading.get("dayfirst")), date_format=reading.get("date_format"),
    )
    frame.attrs.update(name=_stem(path), source=str(path), licence="user data")
    if frame_kind(frame) == "trajectory":  # the exponent and dt: the file's metadata, then NAME.json beside it
        frame.attrs.update(time_metadata(frame.attrs, path.with_name(f"{_stem(path)}.json")))
    return frame


def _combine(text: str, names: list[str], frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Several loaded frames as one: of one kind, no asset in two of them."""
    kinds = {frame_kind(f) for f in frames}
    if len(kinds) > 1:
        raise DataError(
            f"cannot combine market data and trajectories in one frame: {text}",
            source=text, rule="one kind per frame",
        )
    duplicates = _repeated_assets(frames)
    if duplicates:
        raise DataError(
            f"asset(s) {duplicates} appear in more than one of {names}", source=text,
            rule="unique asset names",
        )
    combined = pd.concat(frames, ignore_index=True)
    combined.attrs = {
        "name": text,
        "kind": frames[0].attrs.get("kind"),
        "parts": [dict(f.attrs) for f in frames],
        "repairs": [r for f in frames for r in f.attrs.get("repairs", [])],
    }
    return combined


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*_CSV_SUFFIXES, *_PARQUET_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _repeated_assets(frames: list[pd.DataFrame]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for frame in frames:
        names = set(frame["asset"].unique())
        repeated += sorted(names & seen)
        seen |= names
    return repeated


def _no_options(source: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    if options:
        raise DataError(
            f"unknown option(s) {sorted(options)}; allowed here: {list(allowed) or 'none'}",
            source=source, rule="known options",
        )


def read_file(
    path: Path, *, sep: str | None = None, decimal: str | None = None
) -> tuple[pd.DataFrame, int | None]:
    """Read a CSV or Parquet file as it is, with the offset from a row to its line number.

    Args:
        path: the file.
        sep: a CSV file's separator; default: sniffed (``csv.Sniffer``) among ``, ; tab |`` from
            the file's start, ``,`` when that says nothing.
        decimal: a CSV file's decimal mark; default ``.``, or ``,`` when the separator is ``;`` and
            the first rows hold numbers written ``1,5``.

    Raises:
        FileFormatError: the file is not a readable CSV or Parquet file.
        EmptyDataError: it has no rows.
    """
    lower = path.name.lower()
    if path.is_dir():
        raise FileFormatError("is a directory, not a CSV or Parquet file", source=str(path))
    try:
        if lower.endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(path), None
        if lower.endswith(_CSV_SUFFIXES):
            sample = _sample(path)
            sep = sep or _sniff_separator(sample)
            decimal = decimal or _sniff_decimal(sample, sep)
            return pd.read_csv(path, sep=sep, decimal=decimal), 2
    except pd.errors.EmptyDataError:
        raise EmptyDataError("the file is empty", source=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as error:
        raise FileFormatError(f"cannot be read: {error}", source=str(path)) from None
    except Exception as error:  # pyarrow raises its own error types for damaged files.
        if type(error).__module__.startswith("pyarrow"):
            raise FileFormatError(f"cannot be read: {error}", source=str(path)) from None
        raise
    raise FileFormatError(
        f"unknown file type; use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}",
        source=str(path),
    )


def _sample(path: Path) -> str:
    """The start of a CSV file as text (decompressed when it is compressed)."""
    from pandas.io.common import get_handle

    with get_handle(path, "r", compression="infer", encoding="utf-8", errors="replace") as handle:
        return handle.handle.read(_SNIFF_BYTES)


def _sniff_separator(sample: str) -> str:
    lines = sample.splitlines()
    if len(sample) >= _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    text = "\n".join(lines[:50])
    try:
        return csv.Sniffer().sniff(text, delimiters=_SEPARATORS).delimiter
    except csv.Error:
        return ","


def _sniff_decimal(sample: str, sep: str) -> str:
    """``,`` when ``sep`` is ``;`` and the first data rows hold fields like ``1,5``; else ``.``."""
    if sep != ";":
        return "."
    rows = list(csv.reader(io.StringIO("\n".join(sample.splitlines()[1:50])), delimiter=sep))
    return "," if any(_DECIMAL_COMMA.match(field) for row in rows for field in row) else "."


def datasets() -> pd.DataFrame:
    """The built-in datasets: name, kind, rows, start, end, frequency, source, licence, and for
    chaotic systems their dynamics (``flow``, ``map``, ``delay``), dimension, published largest
    Lyapunov exponent and period (``None`` for market data).

    Chaotic systems are described from the registry without integrating anything.
    """
    rows = [_describe(name, load(name)) | dict.fromkeys(_SYSTEM_COLUMNS) for name in MARKET]
    for name, system in _chaos().SYSTEMS.items():
        step = 1 if system.equations.discrete_time else system.dt
        rows.append({
            "name": name,
            "kind": "trajectory",
            "rows": system.length,
            "start": 0,
            "end": (system.length - 1) * step,
            "frequency": "1 iteration" if system.equations.discrete_time else f"dt={system.dt:g}",
            "source": f"chaosfm: {system.description.split(':')[0]}",
            "licence": "generated",
            "dynamics": system.kind,
            "dimension": system.dimension,
            "lyapunov_reference": system.lyapunov_reference,
            "period": system.period,
        })
    return pd.DataFrame(rows)


def _describe(name: str, frame: pd.DataFrame) -> dict[str, Any]:
    attrs = frame.attrs
    return {
        "name": name,
        "kind": attrs.get("kind"),
        "rows": len(frame),
        "start": _day(frame["timestamp"].min()),
        "end": _day(frame["timestamp"].max()),
        "frequency": attrs.get("frequency", f"dt={attrs.get('dt')}"),
        "source": attrs.get("source"),
        "licence": attrs.get("licence"),
    }


def _day(stamp: Any) -> Any:
    """A midnight timestamp of daily data reads better as a date."""
    if isinstance(stamp, pd.Timestamp) and stamp == stamp.normalize():
        return stamp.date().isoformat()
    return stamp


def describe(frame: pd.DataFrame) -> dict[str, Any]:
    """A short summary of a validated frame (for ``chaosfm data check``)."""
    by_asset = frame.groupby("asset", sort=False)["timestamp"].agg(["count", "min", "max"])
    return {
        "kind": frame_kind(frame),
        "rows": len(frame),
        "assets": {
            str(a): {"rows": int(r["count"]), "start": str(r["min"]), "end": str(r["max"])}
            for a, r in by_asset.iterrows()
        },
        "columns": [str(c) for c in frame.columns],
        "repairs": list(frame.attrs.get("repairs", [])),
        "timezone": frame.attrs.get("timezone"),
        "channels": dict(frame.attrs.get("channels") or {}),
    }
