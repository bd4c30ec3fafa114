"""Malliavin Greeks: the delta of ``E[f(X_T)]`` by the Bismut–Elworthy–Li weight.

For a scalar Itô diffusion ``dX = b(X) dt + s(X) dW`` started at ``x0``, the first variation
(tangent) process ``Y_t = dX_t / dx0`` solves ``dY = b'(X) Y dt + s'(X) Y dW``, ``Y_0 = 1``, and
(Fournié et al. 1999, "Applications of Malliavin calculus to Monte Carlo methods in finance",
Prop. 3.2, with ``a(t) = 1 / T``; Elworthy & Li 1994)

    d/dx0 E[f(X_T)] = E[ f(X_T) * (1 / T) * int_0^T s(X_t)^{-1} Y_t dW_t ].

The weight multiplies the payoff instead of differentiating it, so ``f`` may be discontinuous
(a digital option): finite differences and pathwise derivatives fail or are noisy there.

For a D-dimensional diffusion ``dX = b(X) dt + s(X) dB`` (``s`` a ``(D, D)`` matrix, invertible
along the path, ``B`` D independent Brownian motions) the tangent is the ``(D, D)`` Jacobian flow
``dY = Db(X) Y dt + sum_k D s_k(X) Y dB_k`` (``s_k`` the k-th column of ``s``) and (Fournié et
al. 1999, Prop. 3.2 in D dimensions)

    grad_x0 E[f(X_T)] = E[ f(X_T) * (1 / T) * int_0^T (s(X_t)^{-1} Y_t)^T dB_t ],

a ``(D,)`` weight: the delta with respect to every coordinate of ``x0`` from one set of paths.
A scalar ``x0`` is the case ``D = 1`` with scalar ``b`` and ``s``.

The state, the tangent and the weight integral ``M_t = int_0^t s(X)^{-1} Y dW`` are integrated
together as one three-component SDE driven by the same Brownian motion, with ``diffrax``
(Euler–Maruyama: the Itô integral, not Stratonovich) on a ``VirtualBrownianTree`` (one key per path,
so a path is reproducible and needs no stored increments). Paths are ``vmap``-ed; keys are split
from one key. Dimension letters: P paths, D state dimensions. Black–Scholes baskets, whose
terminal law is exact, have closed-form weights in ``_greeks.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm._config import float_dtype

Scalar = Callable[[jax.Array], jax.Array]


class Greek(NamedTuple):
    """A Monte Carlo estimate and its standard error (sample std / sqrt(paths)): floats, or
    ``(D,)`` arrays for the delta of a D-dimensional diffusion."""

    value: float | np.ndarray
    standard_error: float | np.ndarray
    n_paths: int


class MalliavinPath(NamedTuple):
    """One path's terminal state ``X_T``, tangent ``Y_T`` and weight integral ``M_T``: scalars,
    or ``(D,)``, ``(D, D)`` and ``(D,)`` for a D-dimensional diffusion."""

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
        drift: ``b(x)``: scalar to scalar, or ``(D,) -> (D,)`` (differentiable: ``Db`` drives ``Y``).
        diffusion: ``s(x)``: scalar to scalar, or ``(D,) -> (D, D)``; differentiable and
            invertible along the path.
        x0: starting point, a scalar or ``(D,)``.
        horizon: ``T > 0``.
        key: the path's Brownian motion (a ``VirtualBrownianTree`` seeded with it).
        steps: Euler–Maruyama steps of ``T / steps``.

    Returns:
        ``MalliavinPath`` at ``T``: scalars for a scalar ``x0``, else ``(D,)``, ``(D, D)``, ``(D,)``.
    """
    import diffrax  # only the Greeks need it: `import chaosfm.predictor` stays light for a stream

    scalar = jnp.ndim(x0) == 0
    x0 = jnp.atleast_1d(jnp.asarray(x0, float_dtype()))  # (D,); float64 with x64 on
    size = x0.shape[0]
    if scalar:
        vector_drift = lambda x: jnp.reshape(drift(x[0]), (1,))  # noqa: E731
        matrix_diffusion = lambda x: jnp.reshape(diffusion(x[0]), (1, 1))  # noqa: E731
    else:
        vector_drift, matrix_diffusion = drift, diffusion
    dt = horizon / steps

    def unpack(u):  # (D + D * D + D,) -> x (D,), y (D, D)
        return u[:size], u[size : size + size * size].reshape(size, size)

    def drift_term(t, u, args):
        x, y = unpack(u)
        slope = jax.jacfwd(vector_drift)(x)  # (D, D)
        return jnp.concatenate([vector_drift(x), (slope @ y).reshape(-1), jnp.zeros_like(x)])

    def diffusion_term(t, u, args):
        x, y = unpack(u)
        s = matrix_diffusion(x)  # (D, D): row i, Brownian motion k
        s_slope = jax.jacfwd(matrix_diffusion)(x)  # (D, D, D): d s[i, k] / d x[l]
        tangent = jnp.einsum("ikl,lm->imk", s_slope, y).reshape(size * size, size)  # (D * D, D)
        weight = jnp.linalg.solve(s, y).T  # (D, D): row m, Brownian motion k
        return jnp.concatenate([s, tangent, weight])  # (D + D * D + D, D)

    with jax.default_matmul_precision("highest"):
        brownian = diffrax.VirtualBrownianTree(0.0, horizon, tol=dt / 4, shape=(size,), key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift_term), diffrax.ControlTerm(diffusion_term, brownian))
        start = jnp.concatenate([x0, jnp.eye(size, dtype=x0.dtype).reshape(-1), jnp.zeros_like(x0)])
        solution = diffrax.diffeqsolve(
            terms, diffrax.Euler(), 0.0, horizon, dt, start, saveat=diffrax.SaveAt(t1=True),
            max_steps=steps + 1,
        )
    x, y = unpack(solution.ys[-1])
    m = solution.ys[-1][size + size * size :]
    if scalar:
        return MalliavinPath(state=x[0], tangent=y[0, 0], weight_integral=m[0])
    return MalliavinPath(state=x, tangent=y, weight_integral=m)


def delta(
    payoff: Scalar,
    x0: float | np.ndarray,
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
        payoff: ``f(x)``, vectorisable over a ``(P,)`` array (``(P, D)`` for a D-dimensional
            ``x0``, returning ``(P,)``); need not be continuous.
        x0: starting point, a scalar or ``(D,)`` (then ``drift`` maps ``(D,) -> (D,)`` and
            ``diffusion`` ``(D,) -> (D, D)``).
        T: horizon, ``> 0``.
        n_paths: Monte Carlo paths ``P >= 2``.
        key: split into one Brownian key per path.
        drift: ``b(x)``.
        diffusion: ``s(x)``.
        steps: Euler–Maruyama steps per path.

    Returns:
        ``Greek(value, standard_error, n_paths)``: floats, or ``(D,)`` arrays (the gradient).
    """
    if not T > 0:
        raise ValueError(f"T must be positive; got {T}")
    if n_paths < 2:
        raise ValueError(f"n_paths must be at least 2 for a standard error; got {n_paths}")
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    keys = jax.random.split(key, n_paths)
    start = np.asarray(x0, float_dtype())  # rounded as the paths will hold it
    start = float(start) if start.ndim == 0 else tuple(float(v) for v in start)  # hashable: static in the trace
    paths = _paths(drift, diffusion, start, float(T), int(steps), keys)
    values = np.asarray(payoff(paths.state), np.float64)
    if values.shape != (n_paths,):
        raise ValueError(f"payoff must return {n_paths} values, one per path; got shape {values.shape}")
    weights = np.asarray(paths.weight_integral, np.float64) / T  # (P,) or (P, D)
    terms = values.reshape((n_paths,) + (1,) * (weights.ndim - 1)) * weights
    if not np.all(np.isfinite(terms)):
        raise ValueError("payoff times weight is not finite on some paths")
    mean, error = terms.mean(0), terms.std(0, ddof=1) / np.sqrt(n_paths)
    if weights.ndim == 1:
        return Greek(float(mean), float(error), int(n_paths))
    return Greek(mean, error, int(n_paths))


def _paths(drift, diffusion, x0, horizon, steps, keys) -> MalliavinPath:
    """``(P,)`` paths, jitted and vmapped over keys (functions are static: retraced per new b, s)."""
    start = x0 if isinstance(x0, float) else jnp.asarray(x0, float_dtype())
    run = jax.jit(
        jax.vmap(lambda key: malliavin_path(drift, diffusion, start, horizon, key=key, steps=steps))
    )
    return run(keys)
