"""``chaosfm datasets`` and ``chaosfm data check``: the built-in data, and a file checked against
the validation rules (optionally repaired)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from chaosfm.data import datasets as builtin_datasets
from chaosfm.data import describe, load

__all__ = ["check", "datasets"]


def datasets() -> pd.DataFrame:
    """Name, kind, rows, range, frequency, source and licence of every built-in dataset."""
    return builtin_datasets()


def check(path: str, *, repair: bool = False) -> dict[str, Any]:
    """Load ``path`` (a file or a built-in name) through validation; return its summary (kind, rows,
    assets with their ranges, and what ``repair`` did).

    Raises:
        DataError: naming the file, row, line, column and the rule broken.
    """
    return describe(load(path, repair=repair))
