"""Shared test helpers for the data tests."""

from __future__ import annotations

import numpy as np


def rk4(field, start, t_end: float, step: float) -> np.ndarray:
    """The state at ``t_end`` by classical RK4 with a fixed ``step``: a slow, obviously correct
    reference independent of the package's diffrax integration."""
    state = np.array(start, dtype=np.float64)
    for _ in range(round(t_end / step)):
        k1 = field(state)
        k2 = field(state + 0.5 * step * k1)
        k3 = field(state + 0.5 * step * k2)
        k4 = field(state + step * k3)
        state = state + step / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return state
