"""Reading a stream's input: text lines (stdin, a feed) and a series' rows, one observation each.

Lines are CSV (a header naming the column, or one value per line) or JSON objects
(``{"timestamp": ..., "close": ...}``). :class:`_Lines` turns each into ``(row, line, timestamp,
value)`` or a :class:`chaosfm.data.DataError` naming the line and the rule broken; a row a feed
sends again is a :class:`Resent`. Used by :func:`chaosfm.predictor.run_stream` only.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data import (
    DataError,
    FileFormatError,
    MissingColumnError,
    NonFiniteError,
    NonNumericError,
    NonPositivePriceError,
    TimestampOrderError,
    canonical_columns,
    frame_kind,
    state_columns,
    validate,
)


class _Lines:
    """CSV lines (stdin) checked one at a time by the rules files are: :func:`chaosfm.data.validate`.

    The first line is a header when it names ``column`` (in any layout
    :func:`~chaosfm.data.canonical_columns` knows); without one every line is one value of
    ``column``, and a line of several fields is refused (nothing says which field is meant). Each
    row is validated beside the last good one, so a duplicate or out-of-order timestamp is caught
    as in a file. A line that is a JSON object (``{"timestamp": "2024-01-02 10:00", "close":
    101.5}``) carries its own names, read as a header's are; it needs no header line and may come
    between CSV lines. Calling it yields ``(row, line number, timestamp or None, value or
    DataError or Resent)``, ``row`` the 0-based data row (as validate numbers a file's rows, the
    header not counted): an error is yielded, not raised, so the caller decides whether the stream
    goes on. An error without a row (a header naming no ``column``) stops it in any mode.

    With ``resends`` (a network feed, which may send again after a reconnect what it sent before
    the drop) a row whose timestamp is not after the last good row's is a :class:`Resent`, not a
    bad line, and the header line sent again is passed over.
    """

    def __init__(self, column: str, log: bool, source: str = "<stdin>", dtype: np.dtype = np.dtype(np.float32),
                 *, resends: bool = False):
        self.column, self.log, self.source, self.dtype = column, log, source, np.dtype(dtype)
        self.resends = resends
        self.header: list[str] | None = None
        self.header_names: list[str] | None = None  # the header line's fields as sent
        self.key = column  # the value's key in a record
        self.renames: dict[tuple[str, ...], dict[str, str]] = {}  # per layout of a record: see _renamed
        self.previous: dict[str, Any] | None = None  # the last good record
        self.previous_stamp: Any = None  # its timestamp as sent (None: it had none)
        self.seeded = False  # previous is a snapshot's last row (resume_after), not a line of this input
        self.rows = 0  # data rows seen (0-based row of the next one, as validate numbers a file's)
        self.first = True

    def resume_after(self, timestamp: Any, value: float) -> None:
        """Take the row a snapshot ended at as the last good one: with ``resends``, what the feed
        sends again from before it (a server replaying after the restart) is then skipped too."""
        self.previous, self.previous_stamp = {"timestamp": timestamp, self.column: repr(value)}, timestamp
        self.seeded = True

    @staticmethod
    def _validated_as(names: list[str], key: str) -> dict[str, str]:
        """Names to validate under: a value column validate does not know is checked as ``x0``."""
        probe = pd.DataFrame(columns=names)
        known = frame_kind(probe) == "market" or state_columns(probe)
        return {} if known or "x0" in names else {key: "x0"}

    def __call__(self, lines: Iterable[str]) -> Iterator[tuple[int | None, int, Any, float | DataError | Resent]]:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                parsed = self._parse(number, text)
            except DataError as error:
                yield error.row, number, None, error
                continue
            except Resent as resent:
                yield resent.row, number, resent.timestamp, resent
                continue
            if parsed is not None:
                yield parsed[0], number, *parsed[1:]

    def _parse(self, number: int, text: str) -> tuple[int, Any, float] | None:
        first, self.first = self.first, False
        row = self.rows
        if "\ufffd" in text:  # what the reader put where a byte was not UTF-8
            self.rows += 1
            raise FileFormatError("not UTF-8 text (an undecodable byte)", source=self.source, row=row, line=number,
                                  rule="UTF-8 text")
        if text.startswith("{"):
            self.rows += 1
            record, key = self._json_record(text, row, number)
        else:
            record, key = self._csv_record(first, row, number, text), self.key
            if record is None:
                return None
        stamp = record.get("timestamp")
        if stamp is None:
            record["timestamp"] = row
        value = partial(_value, row=row, line=number, column=self.column, log=self.log, source=self.source,
                        dtype=self.dtype)
        if self.seeded and stamp is None:  # rows without timestamps cannot be ordered after the snapshot's
            self.previous, self.seeded = None, False
        if self.previous is not None and (stamp is None) != (self.previous_stamp is None):
            # The row number standing in for a missing timestamp cannot be ordered against a date.
            value(record[key])  # a line that is no value at all is reported as that first
            raise MissingColumnError(f"{'no' if stamp is None else 'a'} timestamp, where the rows before had"
                                     f" {'one' if stamp is None else 'none'}", source=self.source, row=row,
                                     line=number, column="timestamp", rule="every row timestamped, or none")
        self._validate(record, row, number, key)
        observed = value(record[key])
        self.previous, self.previous_stamp, self.seeded = record, stamp, False
        return row, stamp, observed

    def _csv_record(self, first: bool, row: int, number: int, text: str) -> dict[str, Any] | None:
        """A CSV line as a record under the header's names, or None for a header line."""
        try:
            fields = next(csv.reader([text]))
        except csv.Error as error:
            self.rows += 1
            raise FileFormatError(f"not a readable CSV row ({error}; the line has {len(text)} characters)",
                                  source=self.source, row=row, line=number, rule="readable CSV row") from None
        if first and self._read_header(number, fields):
            return None
        if self.resends and self.header_names == [field.strip() for field in fields]:
            return None  # the header again: a feed starts each connection with it
        self.rows += 1
        if self.header is None:
            if len(fields) > 1:
                raise MissingColumnError(
                    f"{len(fields)} fields and no header naming them: start the feed with a header line naming"
                    f" {self.column!r} (e.g. Date,{self.column}), or send one value per line",
                    source=self.source, row=row, line=number, rule="a header names the fields of a row")
            return {self.column: fields[0]}
        if len(fields) != len(self.header):
            raise FileFormatError(f"{len(fields)} fields; the header has {len(self.header)}",
                                  source=self.source, row=row, line=number, rule="as many fields as the header")
        return dict(zip(self.header, fields))

    def _json_record(self, text: str, row: int, number: int) -> tuple[dict[str, Any], str]:
        """A JSON object line as a record under canonical names, and the key of ``column`` in it."""
        where = {"source": self.source, "row": row, "line": number}
        try:
            # Numbers as text, as a CSV field is: validate reads both alike, and an integer too large
            # for a float is then out of range, not an OverflowError.
            parsed = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
        except (json.JSONDecodeError, RecursionError) as error:
            raise FileFormatError(f"not a readable JSON object ({error}; the line has {len(text)} characters)",
                                  rule="readable JSON object", **where) from None
        if not isinstance(parsed, dict):
            raise FileFormatError(f"a JSON {type(parsed).__name__}, not an object of named fields",
                                  rule="readable JSON object", **where)
        names = [str(name).strip() for name in parsed]
        try:
            canonical = [str(c) for c in canonical_columns(pd.DataFrame(columns=names), self.source).columns]
        except DataError as error:  # e.g. two names of one column: this line's fault, not the stream's
            raise FileFormatError(error.detail, rule=error.rule, **where) from None
        key = self._key_in(names, canonical)
        if key is None:
            raise MissingColumnError(f"the object has no {self.column!r} (its names: {', '.join(names)})",
                                     rule="required columns", **where)
        nested = [name for name, value in parsed.items() if isinstance(value, (dict, list))]
        if nested:
            raise NonNumericError(f"{nested[0]!r} holds a JSON {type(parsed[nested[0]]).__name__}, not a value",
                                  column=nested[0], **where)
        return dict(zip(canonical, parsed.values())), key

    def _key_in(self, names: list[str], canonical: list[str]) -> str | None:
        """The canonical name ``column`` has among ``names`` (as sent), or None."""
        if self.column in canonical:
            return self.column
        lowered = [name.lower() for name in names]
        if self.column in lowered:
            return canonical[lowered.index(self.column)]
        return None

    def _read_header(self, number: int, fields: list[str]) -> bool:
        names = [field.strip() for field in fields]
        canonical = [str(c) for c in canonical_columns(pd.DataFrame(columns=names), self.source).columns]
        key = self._key_in(names, canonical)
        if key is not None:
            self.key = key
        else:
            if len(names) > 1 and not any(_is_number(name) for name in names):
                raise MissingColumnError(
                    f"line {number} is a header ({', '.join(names)}) without the column {self.column!r};"
                    " choose one with --column", source=self.source, rule="required columns")
            return False
        self.header, self.header_names = canonical, names
        return True

    def _validate(self, record: dict[str, Any], row: int, line: int, key: str | None = None) -> None:
        """``record`` by the rules of a file's rows, beside the last good record (timestamp order).

        Raises:
            DataError: a rule broken, naming the row, the line and the column.
            Resent: (``resends``) the timestamp is not after the last good record's.
        """
        key = self.key if key is None else key
        previous = self.previous
        if previous is None or list(previous) == list(record):
            self._check([r for r in (previous, record) if r is not None], row, line, self._renamed(record, key))
            return
        # Two layouts (a CSV row after a JSON object, objects of other names): the record's own
        # rules, then the order over the names both have.
        self._check([record], row, line, self._renamed(record, key))
        shared = [name for name in ("timestamp", key) if name in previous]
        pair = [{name: r[name] for name in shared} for r in (previous, record)]
        self._check(pair, row, line, self._validated_as(shared, key))

    def _renamed(self, record: dict[str, Any], key: str) -> dict[str, str]:
        """:meth:`_validated_as` for ``record``'s names, worked out once per layout (it builds a frame)."""
        layout = (*record, key)
        if layout not in self.renames:
            self.renames[layout] = self._validated_as(list(record), key)
        return self.renames[layout]

    def _check(self, records: list[dict[str, Any]], row: int, line: int, rename: dict[str, str]) -> None:
        try:
            validate(pd.DataFrame(records).rename(columns=rename), self.source)
        except TimestampOrderError as error:
            if not self.resends or len(records) < 2:
                self._reraise(error, row, line, rename)
            raise Resent(row, records[-1]["timestamp"]) from None
        except DataError as error:
            self._reraise(error, row, line, rename)

    def _reraise(self, error: DataError, row: int, line: int, rename: dict[str, str]) -> None:
        """``error`` again, numbered as the stream's row and line, under the name the feed used."""
        back = {v: k for k, v in rename.items()}
        column = back.get(error.column, error.column) if error.column is not None else None
        raise type(error)(error.detail, source=self.source, row=row, line=line, column=column,
                          rule=error.rule) from None


class Resent(Exception):  # noqa: N818 - an event of a feed, not an error: raised only to leave _parse
    """A row a feed sent again: its timestamp is not after the last good row's (see :class:`_Lines`).

    Attributes:
        row: its 0-based data row in the input.
        timestamp: its timestamp as sent.
    """

    def __init__(self, row: int, timestamp: Any):
        super().__init__(f"row {row}: timestamp {timestamp} is not after the last one streamed (sent again)")
        self.row, self.timestamp = row, timestamp


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value(text: Any, *, row: int, line: int, column: str, log: bool, source: str,
           dtype: np.dtype = np.dtype(np.float32)) -> float:
    """``text`` as a float the predictor can take in ``dtype`` (its state's), or the rule it breaks."""
    name = np.dtype(dtype).name
    where = {"source": source, "row": row, "line": line, "column": column}
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NonNumericError(f"{text!r} is not a number", **where) from None
    if not np.isfinite(value):
        raise NonFiniteError(f"value {text!r} is NaN or infinite", **where)
    largest = float(np.finfo(dtype).max)
    if abs(value) > largest:
        raise NonFiniteError(f"{value!r} is beyond {name}'s largest value {largest!r} (the predictor"
                             f" computes in {name})", rule=f"representable in {name}", **where)
    if log and value <= 0:
        raise NonPositivePriceError(f"{value:g} <= 0 cannot take log increments", **where)
    if log and np.asarray(value, dtype) == 0:
        raise NonPositivePriceError(f"{value:g} > 0 rounds to 0 in {name} (the predictor computes in {name})",
                                    rule=f"representable in {name}", **where)
    return value


def _series_items(values: np.ndarray, stamps: list[Any], first: int, column: str, log: bool,
                  dtype: np.dtype = np.dtype(np.float32)) -> Iterator[tuple[int, None, Any, float | DataError]]:
    """``(row, None, timestamp, value or DataError)`` per element of a series, from ``first``: the
    shape of :class:`_Lines`' items; a series has rows, not lines."""
    for i in range(first, len(values)):
        try:
            yield i, None, stamps[i], _value(values[i], row=i, line=None, column=column, log=log, source="<series>",
                                             dtype=dtype)
        except DataError as error:
            yield i, None, stamps[i], error
