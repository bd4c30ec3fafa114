"""Errors raised for bad input data: every one names the source, the row and the rule broken."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file (or frame), the row and the rule broken.

    Attributes:
        detail: the message without the place and the rule (to re-raise it at another place).
        source: the file path or dataset name the data came from (``"<frame>"`` for an
            in-memory DataFrame).
        row: 0-based position of the offending row in the frame, or ``None`` when the
            problem is not tied to a row (a missing column, an empty file).
        column: the offending column, when there is one.
        rule: a short name of the rule broken, e.g. ``"high >= max(open, close, low)"``.
    """

    rule_name = "data"

    def __init__(
        self,
        message: str,
        *,
        source: str = "<frame>",
        row: int | None = None,
        column: str | None = None,
        rule: str | None = None,
        line: int | None = None,
    ):
        self.detail = message
        self.source = source
        self.row = row
        self.column = column
        self.rule = rule or self.rule_name
        self.line = line
        where = [source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message} [rule: {self.rule}]")


class EmptyDataError(DataError):
    rule_name = "not empty"


class MissingColumnError(DataError):
    rule_name = "required columns"


class NonNumericError(DataError):
    rule_name = "numeric values"


class NonFiniteError(DataError):
    rule_name = "finite values"


class NonPositivePriceError(DataError):
    rule_name = "prices > 0"


class CandleShapeError(DataError):
    rule_name = "high >= max(open, close, low) and low <= min(open, close)"


class NegativeVolumeError(DataError):
    rule_name = "volume >= 0"


class TimestampOrderError(DataError):
    rule_name = "timestamps strictly increasing within an asset"


class FileFormatError(DataError):
    rule_name = "readable CSV or Parquet"


class UnknownDatasetError(DataError):
    rule_name = "known dataset"


class LeakageError(DataError):
    """Data past a TimeFence cutoff reached something that must not see it."""

    rule_name = "time fence"
