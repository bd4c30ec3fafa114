"""Shared test helpers for the forecaster tests."""

from __future__ import annotations

import numpy as np


def lorenz63(steps: int, dt: float = 0.02, start=(1.0, 1.0, 1.0), burn_in: int = 1000) -> np.ndarray:
    """``(steps, 3)`` Lorenz-63 states (sigma 10, rho 28, beta 8/3) by classical RK4: a slow,
    obviously correct reference independent of the package's diffrax integration."""

    def field(s):
        return np.array([10.0 * (s[1] - s[0]), s[0] * (28.0 - s[2]) - s[1], s[0] * s[1] - 8.0 / 3.0 * s[2]])

    state, out = np.array(start, dtype=np.float64), np.empty((steps, 3))
    for i in range(burn_in + steps):
        k1 = field(state)
        k2 = field(state + 0.5 * dt * k1)
        k3 = field(state + 0.5 * dt * k2)
        k4 = field(state + dt * k3)
        state = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i >= burn_in:
            out[i - burn_in] = state
    return out
