"""What every ``chaosfm`` command prints with: the console and the table helpers."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Tables are wider than 80 columns; when output goes to a file or pipe, do not squeeze them.
console = Console(width=None if sys.stdout.isatty() else 140)


def _table(title: str, frame: Any) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    return str(value)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None
