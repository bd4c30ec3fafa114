"""Black–Scholes digital Greeks by Malliavin (likelihood-ratio) weights, one asset or a basket.

Under D-dimensional Black–Scholes with correlation ``rho = L L^T`` (Cholesky), the terminal
prices are sampled exactly,

    S_i(T) = S_i(0) exp((r - sigma_i^2 / 2) T + sigma_i (L B_T)_i),   B_T ~ N(0, T I_D),

so no time step biases the weights. With ``G = L^{-T} B_T`` and ``U = L B_T`` (``U = W_T``, the
correlated Brownian motion at ``T``), differentiating the Gaussian density of ``log S(T)``
instead of the payoff gives, for ``E[e^{-rT} f(S_T)]`` (Fournié et al. 1999, "Applications of
Malliavin calculus to Monte Carlo methods in finance", sec. 4 and 4.2 for the multidimensional
case; Benhamou 2003, "Optimal Malliavin weighting function for the computation of the Greeks",
sec. 3):

    delta_i   weight  G_i / (S_i(0) sigma_i T)
    gamma_ij  weight  (s_i s_j - (rho^{-1})_ij / (sigma_i sigma_j T) - delta_ij s_i) / (S_i(0) S_j(0))
                      with s_i = G_i / (sigma_i T)
    vega_i    weight  G_i U_i / (sigma_i T) - G_i - 1 / sigma_i          (d/d sigma_i, rho fixed)

For ``D = 1`` these are Fournié et al.'s closed forms ``W_T / (S_0 sigma T)``,
``(W_T^2 / (sigma T) - W_T - 1 / sigma) / (S_0^2 sigma T)`` and ``W_T^2 / (sigma T) - W_T - 1 / sigma``
(:func:`digital_greeks` writes them out for one asset). The delta weight is the
Bismut–Elworthy–Li weight of :func:`chaosfm.predictor.delta` on this diffusion: for geometric
Brownian motion ``s(X)^{-1} Y`` is the constant ``L^{-1} / (sigma S(0))`` and its Itô integral
over ``[0, T]`` divided by ``T`` is ``G_i / (S_i(0) sigma_i T)``.

Paths are drawn in batches of ``batch_size`` (one subkey each, split from ``key`` once), so
memory is bounded by the batch, not by ``n_paths``; sums are accumulated on the host in float64.
The paths are float32, or float64 when JAX's x64 is on (``chaosfm greeks --x64``).
Dimension letters: P paths (of a batch), D assets.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm._config import float_dtype
from chaosfm.predictor._malliavin import Greek

_HIGHEST = jax.lax.Precision.HIGHEST  # accelerators default to bf16 passes in float32 matmuls


class BasketGreeks(NamedTuple):
    """Monte Carlo Greeks of a basket digital and their standard errors (std / sqrt(paths)).

    ``price``, ``price_se``: scalars. ``delta``, ``vega`` and their errors: ``(D,)``.
    ``gamma``, ``gamma_se``: ``(D, D)``.
    """

    price: float
    price_se: float
    delta: np.ndarray
    delta_se: np.ndarray
    gamma: np.ndarray
    gamma_se: np.ndarray
    vega: np.ndarray
    vega_se: np.ndarray
    n_paths: int


class DigitalGreeks(NamedTuple):
    """Price, delta, gamma and vega of a one-asset digital call, each a :class:`Greek`."""

    price: Greek
    delta: Greek
    gamma: Greek
    vega: Greek


def _check(n_paths: int, maturity: float, batch_size: int) -> None:
    if not maturity > 0:
        raise ValueError(f"maturity must be positive; got {maturity}")
    if n_paths < 2:
        raise ValueError(f"n_paths must be at least 2 for a standard error; got {n_paths}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")


def _batches(n_paths: int, batch_size: int, key: jax.Array) -> list[tuple[jax.Array, int]]:
    """``(subkey, paths)`` of each batch: one split of ``key``, the last batch possibly shorter."""
    count = math.ceil(n_paths / batch_size)
    keys = jax.random.split(key, count)
    return [(keys[i], min(batch_size, n_paths - i * batch_size)) for i in range(count)]


class _Moments:
    """Running float64 sums of per-path terms: mean and standard error of each entry."""

    def __init__(self) -> None:
        self.total: dict[str, np.ndarray] = {}
        self.squares: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, terms: dict[str, jax.Array]) -> None:
        for name, value in terms.items():
            value = np.asarray(value, np.float64)  # (P, ...)
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name}: payoff times weight is not finite")
            self.total[name] = self.total.get(name, 0.0) + value.sum(0)
            self.squares[name] = self.squares.get(name, 0.0) + (value**2).sum(0)
        self.count += int(next(iter(terms.values())).shape[0])

    def mean_se(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total[name] / self.count
        variance = np.maximum(self.squares[name] / self.count - mean**2, 0.0) * self.count / (self.count - 1)
        return mean, np.sqrt(variance / self.count)


@jax.jit
def _basket_terms(normals, spots, weights, strike, vols, cholesky, rate, maturity):
    """Per-path discounted payoff times each weight (module docstring); ``normals`` ``(P, D)``."""
    brownian = jnp.sqrt(maturity) * normals  # (P, D): B_T
    correlated = jnp.dot(brownian, cholesky.T, precision=_HIGHEST)  # (P, D): U = L B_T
    dual = jax.scipy.linalg.solve_triangular(cholesky, brownian.T, lower=True, trans="T").T  # (P, D): G = L^-T B_T
    terminal = spots[None] * jnp.exp(((rate - 0.5 * vols**2) * maturity)[None] + vols[None] * correlated)  # (P, D)
    payoff = jnp.exp(-rate * maturity) * (jnp.dot(terminal, weights, precision=_HIGHEST) > strike).astype(normals.dtype)  # (P,)
    score = dual / (vols * maturity)[None]  # (P, D): d log p / d log S_i(0)
    eye = jnp.eye(spots.shape[0], dtype=normals.dtype)
    inverse_rho = jax.scipy.linalg.cho_solve((cholesky, True), eye)
    curvature = inverse_rho / (jnp.outer(vols, vols) * maturity)  # (D, D): (T Sigma)^-1
    second = score[:, :, None] * score[:, None, :] - curvature[None] - eye[None] * score[:, :, None]  # (P, D, D)
    gamma_weight = second / jnp.outer(spots, spots)[None]  # (P, D, D)
    vega_weight = dual * correlated / (vols * maturity)[None] - dual - (1.0 / vols)[None]  # (P, D)
    return {
        "price": payoff,
        "delta": payoff[:, None] * score / spots[None],
        "gamma": payoff[:, None, None] * gamma_weight,
        "vega": payoff[:, None] * vega_weight,
    }


def basket_digital_greeks(
    spots: np.ndarray,
    weights: np.ndarray,
    strike: float,
    vols: np.ndarray,
    correlation: np.ndarray,
    rate: float,
    maturity: float,
    n_paths: int,
    *,
    key: jax.Array,
    batch_size: int = 1 << 18,
) -> BasketGreeks:
    """Price, delta, gamma and vega of ``e^{-rT} 1{sum_i w_i S_i(T) > K}`` (module docstring).

    Args:
        spots: ``S(0)``, ``(D,)``, positive.
        weights: basket weights ``w``, ``(D,)``.
        strike: ``K``.
        vols: ``sigma``, ``(D,)``, positive, per year.
        correlation: ``rho``, ``(D, D)``, symmetric positive definite with a unit diagonal.
        rate: ``r``, continuously compounded, per year.
        maturity: ``T`` in years, positive.
        n_paths: Monte Carlo paths, at least 2.
        key: split once into one subkey per batch.
        batch_size: paths drawn at once.

    Returns:
        :class:`BasketGreeks`; ``vega_i`` is ``d/d sigma_i`` with the correlation held fixed.
    """
    _check(n_paths, maturity, batch_size)
    spots, weights, vols = (np.asarray(v, np.float64).reshape(-1) for v in (spots, weights, vols))
    correlation = np.atleast_2d(np.asarray(correlation, np.float64))
    size = spots.size
    if weights.shape != (size,) or vols.shape != (size,) or correlation.shape != (size, size):
        raise ValueError(
            f"spots {spots.shape}, weights {weights.shape}, vols {vols.shape} and correlation "
            f"{correlation.shape} must be (D,), (D,), (D,) and (D, D)"
        )
    if np.any(spots <= 0) or np.any(vols <= 0):
        raise ValueError(f"spots and vols must be positive; got {spots.tolist()} and {vols.tolist()}")
    if not (np.allclose(correlation, correlation.T) and np.allclose(np.diag(correlation), 1.0)):
        raise ValueError(f"correlation must be symmetric with a unit diagonal; got {correlation.tolist()}")
    try:
        cholesky = np.linalg.cholesky(correlation)
    except np.linalg.LinAlgError:
        raise ValueError(f"correlation must be positive definite; got {correlation.tolist()}") from None
    arrays = [jnp.asarray(v, float_dtype()) for v in (spots, weights, strike, vols, cholesky, rate, maturity)]
    moments = _Moments()
    for subkey, paths in _batches(n_paths, batch_size, key):
        moments.add(_basket_terms(jax.random.normal(subkey, (paths, size)), *arrays))
    (price, price_se), (d, d_se), (g, g_se), (v, v_se) = (
        moments.mean_se(name) for name in ("price", "delta", "gamma", "vega")
    )
    return BasketGreeks(float(price), float(price_se), d, d_se, g, g_se, v, v_se, int(n_paths))


@jax.jit
def _digital_terms(normals, spot, strike, vol, rate, maturity):
    """Fournié et al. (1999) one-asset weights written out; ``normals`` ``(P, 1)``."""
    brownian = jnp.sqrt(maturity) * normals[:, 0]  # (P,): W_T
    terminal = spot * jnp.exp((rate - 0.5 * vol**2) * maturity + vol * brownian)
    payoff = jnp.exp(-rate * maturity) * (terminal > strike).astype(normals.dtype)
    vega_weight = brownian**2 / (vol * maturity) - brownian - 1.0 / vol
    return {
        "price": payoff,
        "delta": payoff * brownian / (spot * vol * maturity),
        "gamma": payoff * vega_weight / (spot**2 * vol * maturity),
        "vega": payoff * vega_weight,
    }


def digital_greeks(
    spot: float,
    strike: float,
    vol: float,
    rate: float,
    maturity: float,
    n_paths: int,
    *,
    key: jax.Array,
    batch_size: int = 1 << 18,
) -> DigitalGreeks:
    """Price, delta, gamma and vega of a one-asset digital call ``e^{-rT} 1{S_T > K}``.

    Draws the same normals as :func:`basket_digital_greeks` with ``D = 1`` for the same key, so
    the two agree to rounding.

    Args:
        spot: ``S_0 > 0``.
        strike: ``K``.
        vol: ``sigma > 0`` per year.
        rate: ``r`` per year.
        maturity: ``T`` in years, positive.
        n_paths: Monte Carlo paths, at least 2.
        key: split once into one subkey per batch.
        batch_size: paths drawn at once.

    Returns:
        :class:`DigitalGreeks` of :class:`Greek` (value, standard error, paths).
    """
    _check(n_paths, maturity, batch_size)
    if not (spot > 0 and vol > 0):
        raise ValueError(f"spot and vol must be positive; got {spot} and {vol}")
    arrays = [jnp.asarray(v, float_dtype()) for v in (spot, strike, vol, rate, maturity)]
    moments = _Moments()
    for subkey, paths in _batches(n_paths, batch_size, key):
        moments.add(_digital_terms(jax.random.normal(subkey, (paths, 1)), *arrays))
    return DigitalGreeks(*(
        Greek(float(mean), float(se), int(n_paths)) for mean, se in map(moments.mean_se, DigitalGreeks._fields)
    ))


def digital_closed_form(spot: float, strike: float, vol: float, rate: float, maturity: float) -> dict[str, float]:
    """Black–Scholes price, delta, gamma and vega of ``e^{-rT} 1{S_T > K}``: ``N(d2)`` differentiated.

    ``price = e^{-rT} N(d2)``, ``delta = e^{-rT} phi(d2) / (sigma S sqrt(T))``,
    ``gamma = -e^{-rT} phi(d2) d1 / (sigma^2 S^2 T)``, ``vega = -e^{-rT} phi(d2) d1 / sigma``.
    """
    root = math.sqrt(maturity)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol**2) * maturity) / (vol * root)
    d2 = d1 - vol * root
    discount, density = math.exp(-rate * maturity), math.exp(-0.5 * d2**2) / math.sqrt(2 * math.pi)
    return {
        "price": discount * 0.5 * (1.0 + math.erf(d2 / math.sqrt(2.0))),
        "delta": discount * density / (vol * spot * root),
        "gamma": -discount * density * d1 / (vol**2 * spot**2 * maturity),
        "vega": -discount * density * d1 / vol,
    }
