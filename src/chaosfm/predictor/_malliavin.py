"""Malliavin Greeks: the delta of ``E[f(X_T)]`` by the Bismut–Elworthy–Li weight.

For a scalar Itô diffusion ``dX = b(X) dt + s(X) dW`` started at ``x0``, the first variation
(tangent) process ``Y_t = dX_t / dx0`` solves ``dY = b'(X) Y dt + s'(X) Y dW``, ``Y_0 = 1``, and
(Fournié et al. 1999, "Applications of Malliavin calculus to Monte Carlo methods in finance",
Prop. 3.2, with ``a(t) = 1 / T``; Elworthy & Li 1994)

    d/dx0 E[f(X_T)] = E[ f(X_T) * (1 / T) * int_0^T s(X_t)^{-1} Y_t dW_t ].

The weight multiplies the payoff instead of differentiating it, so ``f`` may be discontinuous
(a digital option): finite differences and pathwise derivatives fail or are noisy there.

The state, the tangent and the weight integral ``M_t = int_0^t s(X)^{-1} Y dW`` are integrated
together as one three-component SDE driven by the same Brownian motion, with ``diffrax``
(Euler–Maruyama: the Itô integral, not Stratonovich) on a ``VirtualBrownianTree`` (one key per path,
so a path is reproducible and needs no stored increments). Paths are ``vmap``-ed; keys are split
from one key. Dimension letters: P paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Scalar = Callable[[jax.Array], jax.Array]


class Greek(NamedTuple):
    """A Monte Carlo estimate and its standard error (sample std / sqrt(paths))."""

    value: float
    standard_error: float
    n_paths: int


class MalliavinPath(NamedTuple):
    """One path's terminal state ``X_T``, tangent ``Y_T`` and weight integral ``M_T``."""

    state: jax.Array
    tangent: jax.Array
    weight_integral: jax.Array


def malliavin_path(
    drift: Scalar,
    diffusion: Scalar,
    x0: float | jax.Array,
    horizon: float,
    *,
    key: jax.Array,
    steps: int = 128,
) -> MalliavinPath:
    """Integrate ``(X, Y, M)`` over ``[0, horizon]`` on one Brownian path.

    Args:
        drift: ``b(x)``, a scalar function of a scalar (differentiable: ``b'`` drives ``Y``).
        diffusion: ``s(x)``, scalar, differentiable and non-zero along the path.
        x0: starting point.
        horizon: ``T > 0``.
        key: the path's Brownian motion (a ``VirtualBrownianTree`` seeded with it).
        steps: Euler–Maruyama steps of ``T / steps``.

    Returns:
        ``MalliavinPath`` of scalars at ``T``.
    """
    import diffrax  # only the Greeks need it: `import chaosfm.predictor` stays light for a stream

    x0 = jnp.asarray(x0, jnp.float32)
    dt = horizon / steps

    def drift_term(t, u, args):
        x, y, _ = u
        slope = jax.grad(drift)(x)
        return jnp.stack([drift(x), slope * y, jnp.zeros_like(x)])

    def diffusion_term(t, u, args):
        x, y, _ = u
        s, s_prime = jax.value_and_grad(diffusion)(x)
        return jnp.stack([s, s_prime * y, y / s])[:, None]  # (3 components, 1 Brownian motion)

    brownian = diffrax.VirtualBrownianTree(0.0, horizon, tol=dt / 4, shape=(1,), key=key)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift_term), diffrax.ControlTerm(diffusion_term, brownian))
    start = jnp.stack([x0, jnp.ones_like(x0), jnp.zeros_like(x0)])
    solution = diffrax.diffeqsolve(
        terms, diffrax.Euler(), 0.0, horizon, dt, start, saveat=diffrax.SaveAt(t1=True),
        max_steps=steps + 1,
    )
    x, y, m = solution.ys[-1]
    return MalliavinPath(state=x, tangent=y, weight_integral=m)


def delta(
    payoff: Scalar,
    x0: float,
    T: float,
    n_paths: int,
    *,
    key: jax.Array,
    drift: Scalar,
    diffusion: Scalar,
    steps: int = 128,
) -> Greek:
    """``d/dx0 E[payoff(X_T)]`` by the Bismut–Elworthy–Li weight ``M_T / T`` (module docstring).

    Discounting, if any, belongs in ``payoff`` (``lambda x: exp(-r T) * (x > K)``).

    Args:
        payoff: ``f(x)``, vectorisable over a ``(P,)`` array; need not be continuous.
        x0: starting point.
        T: horizon, ``> 0``.
        n_paths: Monte Carlo paths ``P >= 2``.
        key: split into one Brownian key per path.
        drift: ``b(x)``.
        diffusion: ``s(x)``.
        steps: Euler–Maruyama steps per path.

    Returns:
        ``Greek(value, standard_error, n_paths)``.
    """
    if not T > 0:
        raise ValueError(f"T must be positive; got {T}")
    if n_paths < 2:
        raise ValueError(f"n_paths must be at least 2 for a standard error; got {n_paths}")
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    keys = jax.random.split(key, n_paths)
    paths = _paths(drift, diffusion, float(x0), float(T), int(steps), keys)
    terms = np.asarray(payoff(paths.state), np.float64) * np.asarray(paths.weight_integral, np.float64) / T
    if terms.shape != (n_paths,) or not np.all(np.isfinite(terms)):
        raise ValueError(f"payoff times weight must be {n_paths} finite values; got shape {terms.shape}")
    return Greek(float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n_paths)), int(n_paths))


def _paths(drift, diffusion, x0, horizon, steps, keys) -> MalliavinPath:
    """``(P,)`` paths, jitted and vmapped over keys (functions are static: retraced per new b, s)."""
    run = jax.jit(
        jax.vmap(lambda key: malliavin_path(drift, diffusion, x0, horizon, key=key, steps=steps))
    )
    return run(keys)
