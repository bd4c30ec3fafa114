"""The one place library code talks to a person: progress bars and notes, both on stderr.

Library functions call :func:`progress` and :func:`say`; nothing else in ``src/`` prints. Bars are
shown only when stderr is a terminal (or ``CHAOSFM_PROGRESS=1``) and never when
``CHAOSFM_PROGRESS=0``, so tests and pipes stay quiet.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    flag = os.environ.get("CHAOSFM_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr when a person is watching."""
    if not _enabled():
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.console import Console

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (
        TextColumn("{task.description}", markup=False),  # descriptions may hold file and asset names
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` while a single long step runs (an integration, a compile)."""
    if not _enabled():
        yield
        return
    from rich.console import Console
    from rich.text import Text

    with Console(stderr=True).status(Text(message)):  # a Text, so a name like a[/b] is not markup
        yield


def say(message: str) -> None:
    """A note for the person running chaosfm (what a repair did, where a file was written)."""
    if os.environ.get("CHAOSFM_QUIET") not in (None, "", "0"):
        return
    print(message, file=sys.stderr)
