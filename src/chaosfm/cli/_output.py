"""What every ``chaosfm`` command prints with: the console and the table helpers."""

from __future__ import annotations

import sys
from functools import cache
from typing import Any


@cache
def console() -> Any:
    """The console of stdout; tables are wider than 80 columns, so a file or pipe is not squeezed."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def table(title: str, frame: Any) -> Any:
    """A rich table of a DataFrame's columns and rows."""
    from rich.table import Table

    out = Table(title=title)
    for column in frame.columns:
        out.add_column(str(column))
    for row in frame.itertuples(index=False):
        out.add_row(*[cell(v) for v in row])
    return out


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    return str(value)


def show(title: str, frame: Any) -> None:
    console().print(table(title, frame))


def say(text: str) -> None:
    console().print(text)
