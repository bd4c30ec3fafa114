"""The one place library code talks to a person: progress bars and notes, both on stderr.

Library functions call :func:`progress` and :func:`say`; nothing else in ``src/`` prints. Bars are
shown only when stderr is a terminal (or ``CHAOSFM_PROGRESS=1``) and never when
``CHAOSFM_PROGRESS=0``, so tests and pipes stay quiet.

A loop whose first pass compiles (a jitted training step, a model's first forecast) says so:
``progress(..., first=COMPILING)`` shows ``COMPILING`` beside the bar until the first item's work
returns, and :func:`compiling` does the same around a single block; without a terminal
(progress forced on with ``CHAOSFM_PROGRESS=1``) the note is one line on stderr instead, unless
``CHAOSFM_QUIET`` is set. Otherwise a bar sits at 0 for the seconds XLA takes, with no word.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    flag = os.environ.get("CHAOSFM_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    return sys.stderr.isatty()


COMPILING = "compiling (first step)..."
"""The note beside a bar whose first step compiles (``progress(..., first=COMPILING)``)."""


def _quiet() -> bool:
    return os.environ.get("CHAOSFM_QUIET") not in (None, "", "0")


def progress(
    items: Iterable[T], description: str, total: int | None = None, *, first: str | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr when a person is watching.

    Args:
        items: what to iterate over.
        description: the bar's label.
        total: items expected (default: ``len(items)`` when it has one).
        first: a note shown beside the label until the work on the first item returns (the
            caller's loop body runs between two ``next`` calls), e.g. :data:`COMPILING` when the
            first step compiles; on a stderr that is not a terminal it is printed as one line.
    """
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
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for index, item in enumerate(items):
            if index == 0 and first is not None:
                bar.update(task, description=f"{description} · {first}")
                if not console.is_terminal and not _quiet():
                    print(f"{description}: {first}", file=sys.stderr, flush=True)
            yield item
            if index == 0 and first is not None:
                bar.update(task, description=description)
            bar.advance(task)


@contextlib.contextmanager
def compiling(what: str) -> Iterator[None]:
    """``<what>: compiling (first step)...`` while the block runs (a first, compiling call made
    outside a :func:`progress` loop): a spinner on a terminal, one line on another stderr."""
    message = f"{what}: {COMPILING}"
    if _enabled() and not sys.stderr.isatty() and not _quiet():
        print(message, file=sys.stderr, flush=True)
    with status(message):
        yield


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
    if _quiet():
        return
    print(message, file=sys.stderr)


@contextlib.contextmanager
def byte_progress(total: int, description: str, *, after: float = 2.0) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` bytes, shown once the work has taken ``after`` seconds (a quick
    copy shows none); the block calls the yielded ``advance(bytes_done_since_last_call)``."""
    if not _enabled():
        yield lambda done: None
        return
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    started, state = time.monotonic(), {"done": 0}
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = None

    def advance(done: int) -> None:
        nonlocal task
        state["done"] += done
        if task is None:
            if time.monotonic() - started < after:
                return
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=state["done"])

    try:
        yield advance
    finally:
        if task is not None:
            bar.stop()
