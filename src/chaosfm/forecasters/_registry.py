"""The registry of named forecasters: what a config or ``--models`` may name.

Built here, in one place, from the classes themselves (no module adds itself on import).
"""

from __future__ import annotations

import inspect
from typing import Any

from chaosfm.forecasters._base import AbstractForecaster
from chaosfm.forecasters._baselines import AutoRegressive, Garch, LastValue, RandomWalk, SeasonalNaive
from chaosfm.forecasters._parroting import ContextParroting

BASELINES: dict[str, type[AbstractForecaster]] = {
    cls.name: cls for cls in (LastValue, RandomWalk, SeasonalNaive, AutoRegressive, Garch, ContextParroting)
}
"""Baseline name -> class, for configs and the CLI."""


def make_baseline(name: str, **options: Any) -> AbstractForecaster:
    """Build the baseline registered as ``name`` with constructor ``options``.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or an option the
            baseline does not take (the message lists the ones it does).
    """
    if name not in BASELINES:
        known = ", ".join(sorted(BASELINES))
        raise ValueError(f"unknown baseline {name!r}; known baselines: {known}")
    cls = BASELINES[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError:
        accepted = ", ".join(signature.parameters) or "none"
        raise ValueError(
            f"baseline {name!r} does not take option(s) {sorted(options)}; it takes: {accepted}"
        ) from None
    return cls(**options)
