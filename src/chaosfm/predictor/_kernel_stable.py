"""Kernel A: alpha-stable Lévy Monte Carlo for the next increment.

Parameters ``(alpha, beta, gamma, delta)`` are in Nolan's S1 parametrisation (Samorodnitsky &
Taqqu 1994, def. 1.1.6; ``scipy.stats.levy_stable``'s default), characteristic function

    log E exp(i t X) = -gamma^alpha |t|^alpha (1 - i beta sign(t) tan(pi alpha / 2)) + i delta t
                       (alpha != 1).

Sampling is Chambers, Mallows & Stuck (1976) in the form of Weron (1996, eqs. 3.2-3.4). Fitting
is the regression method of Koutrouvelis (1980) on the empirical characteristic function, one
pass with a fixed ``t`` grid (so it jits): ``log(-log |phi(t)|^2) = log(2 gamma^alpha) +
alpha log|t|`` gives alpha and gamma, and the phase ``arg phi(t) = delta t + beta gamma^alpha
tan(pi alpha / 2) |t|^alpha sign(t)`` gives beta and delta.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import StableConfig


class StableParams(NamedTuple):
    alpha: jax.Array
    beta: jax.Array
    gamma: jax.Array
    delta: jax.Array


def sample_stable(key: jax.Array, params: StableParams, shape: tuple[int, ...]) -> jax.Array:
    """Draw ``shape`` samples of S1-stable ``params`` by Chambers–Mallows–Stuck."""
    key_v, key_w = jax.random.split(key)
    dtype = jnp.result_type(params.alpha)
    half_pi = math.pi / 2
    v = jax.random.uniform(key_v, shape, dtype, -half_pi, half_pi)
    w = jax.random.exponential(key_w, shape, dtype)
    alpha, beta, gamma, delta = params
    # The alpha = 1 branch is evaluated with a safe alpha and selected away, so gradients and
    # jit never see tan(pi / 2).
    near_one = jnp.abs(alpha - 1.0) < 1e-3
    a = jnp.where(near_one, 0.5, alpha)
    zeta = beta * jnp.tan(half_pi * a)
    b = jnp.arctan(zeta) / a
    s = (1.0 + zeta**2) ** (1.0 / (2.0 * a))
    general = (
        s
        * jnp.sin(a * (v + b))
        / jnp.cos(v) ** (1.0 / a)
        * (jnp.cos(v - a * (v + b)) / w) ** ((1.0 - a) / a)
    )
    general = gamma * general + delta
    unit = (2.0 / math.pi) * (
        (half_pi + beta * v) * jnp.tan(v)
        - beta * jnp.log(half_pi * w * jnp.cos(v) / (half_pi + beta * v))
    )
    one = gamma * unit + (2.0 / math.pi) * beta * gamma * jnp.log(gamma) + delta
    return jnp.where(near_one, one, general)


# t grid for the characteristic-function regression, on data standardised by its IQR scale.
_T_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def fit_stable(samples: jax.Array, config: StableConfig, weights: jax.Array | None = None) -> StableParams:
    """Koutrouvelis regression fit of S1 parameters to ``(T,)`` samples (``weights`` mask them).

    alpha is clipped into ``[config.min_alpha, 2]``, beta into ``[-1, 1]``.
    """
    if weights is None:
        weights = jnp.ones_like(samples)
    weights = weights / jnp.maximum(jnp.sum(weights), 1e-12)
    dtype = samples.dtype
    # Standardise robustly: median and a quantile scale (IQR / 1.349 is sigma for a Gaussian).
    order = jnp.argsort(jnp.where(weights > 0, samples, jnp.inf))
    cum = jnp.cumsum(weights[order])
    sorted_values = samples[order]

    def quantile(q):
        index = jnp.searchsorted(cum, q, method="compare_all")  # one fused comparison
        return sorted_values[jnp.clip(index, 0, samples.shape[0] - 1)]

    centre = quantile(0.5)
    scale = jnp.maximum((quantile(0.75) - quantile(0.25)) / 1.349, 1e-12)
    x = (samples - centre) / scale
    t = jnp.asarray(_T_GRID, dtype)
    phase = t[:, None] * x[None, :]  # (K, T)
    real = jnp.sum(weights[None] * jnp.cos(phase), -1)
    imag = jnp.sum(weights[None] * jnp.sin(phase), -1)
    modulus2 = jnp.clip(real**2 + imag**2, 1e-12, 1.0 - 1e-6)
    y = jnp.log(-jnp.log(modulus2))
    log_t = jnp.log(t)
    slope = jnp.sum((log_t - log_t.mean()) * (y - y.mean())) / jnp.sum((log_t - log_t.mean()) ** 2)
    alpha = jnp.clip(slope, config.min_alpha, 2.0)
    intercept = y.mean() - slope * log_t.mean()
    gamma_alpha = jnp.exp(intercept) / 2.0  # gamma^alpha of the standardised data
    gamma_std = gamma_alpha ** (1.0 / alpha)
    # Phase regression on [t, gamma^alpha tan(pi alpha / 2) t^alpha] (no intercept).
    angle = jnp.arctan2(imag, real)
    tan_term = jnp.tan(math.pi * jnp.minimum(alpha, 1.999) / 2.0)
    design = jnp.stack([t, gamma_alpha * tan_term * t**alpha], axis=-1)  # (K, 2)
    # The 2 x 2 normal equations by Cramer's rule: a LAPACK call costs more than the flops.
    a = jnp.sum(design[:, 0] ** 2) + 1e-6
    b = jnp.sum(design[:, 0] * design[:, 1])
    d = jnp.sum(design[:, 1] ** 2) + 1e-6
    u = jnp.sum(design[:, 0] * angle)
    v = jnp.sum(design[:, 1] * angle)
    determinant = a * d - b * b
    beta = jnp.clip((a * v - b * u) / determinant, -1.0, 1.0)
    delta_std = (d * u - b * v) / determinant
    return StableParams(
        alpha=alpha,
        beta=jnp.where(alpha > 1.95, 0.0, beta),  # beta is not identified as alpha -> 2
        gamma=gamma_std * scale,
        delta=centre + delta_std * scale,
    )


class StableOutput(NamedTuple):
    prediction: jax.Array  # median of the draws
    draws: jax.Array  # (M,)
    params: StableParams


def predict_stable(
    increments: jax.Array, weights: jax.Array, config: StableConfig, *, key: jax.Array
) -> StableOutput:
    """Fit on the recent ``(T,)`` increments (``weights`` mask the valid ones) and draw the next.

    The point prediction is the median of the draws: the mean does not exist for alpha <= 1.
    """
    params = fit_stable(increments, config, weights)
    draws = sample_stable(key, params, (config.num_draws,))
    return StableOutput(prediction=jnp.median(draws), draws=draws, params=params)
