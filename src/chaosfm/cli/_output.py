"""What every ``chaosfm`` command prints with: the console and the table helpers.

Text is printed as it is, never read as rich markup: file names, ``--out`` folders, asset names and
repair notes come from the user, and ``a[/b]c.csv`` or ``[bold]x`` must print as typed. Colour
is asked for explicitly, as a ``(text, style)`` part of :func:`say`.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any


@cache
def console() -> Any:
    """The console of stdout; tables are wider than 80 columns, so a file or pipe is not squeezed."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140, markup=False)


def table(title: str, frame: Any) -> Any:
    """A rich table of a DataFrame's columns and rows."""
    from rich.table import Table

    from rich.text import Text

    out = Table(title=Text(str(title)))
    for column in frame.columns:
        out.add_column(Text(str(column)))
    for row in frame.itertuples(index=False):
        out.add_row(*[Text(cell(v)) for v in row])
    return out


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    return str(value)


def show(title: str, frame: Any) -> None:
    console().print(table(title, frame))


def say(*parts: str | tuple[str, str]) -> None:
    """Print one line of ``parts``: a string as it is, a ``(text, style)`` pair in that rich style
    (``("ok", "green")``). No part is read as markup."""
    from rich.text import Text

    console().print(Text.assemble(*parts))
