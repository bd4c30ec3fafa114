"""Exact fractional Brownian motion by circulant embedding (Davies & Harte 1987)."""

from __future__ import annotations

import numpy as np


def fgn_autocovariance(hurst: float, lags: np.ndarray) -> np.ndarray:
    """Autocovariance of unit fractional Gaussian noise at integer ``lags``."""
    k = np.abs(lags).astype(np.float64)
    return 0.5 * ((k + 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + np.abs(k - 1) ** (2 * hurst))


def davies_harte(length: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """A path ``B_0 = 0, B_1, ..., B_length`` of fBm with Hurst ``hurst`` on unit steps.

    The fGn covariance is embedded in a circulant matrix of size ``2 * length`` whose eigenvalues
    (one FFT) are non-negative for every ``hurst`` in (0, 1); scaling complex white noise by their
    square roots and transforming back gives fGn with exactly the right covariance.
    """
    if not 0.0 < hurst < 1.0:
        raise ValueError(f"hurst must lie in (0, 1), got {hurst}")
    gamma = fgn_autocovariance(hurst, np.arange(length + 1))
    circulant_row = np.concatenate([gamma, gamma[-2:0:-1]])  # (2 * length,)
    eigenvalues = np.fft.fft(circulant_row).real
    if eigenvalues.min() < -1e-8 * eigenvalues.max():
        raise ValueError("circulant embedding is not non-negative definite")
    size = circulant_row.size
    noise = rng.standard_normal(size) + 1j * rng.standard_normal(size)
    fgn = np.fft.fft(np.sqrt(np.maximum(eigenvalues, 0.0) / size) * noise).real[:length]
    return np.concatenate([[0.0], np.cumsum(fgn)])
