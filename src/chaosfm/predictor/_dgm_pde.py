"""Kernel B's Deep Galerkin network on a general terminal-value problem in one space dimension.

Solves ``u_t + F(t, x, u, u_x, u_xx) = 0`` on ``[0, T] x [-D, D]`` with ``u(T, x) = g(x)`` and
``u(t, +-D) = h(t, +-D)`` (Sirignano & Spiliopoulos 2018, sec. 2: the Galerkin loss is the mean
squared interior residual at random collocation points plus the squared terminal and boundary
mismatch). The network, its initialisation and its optimiser are those of kernel B
(``_kernel_dgm.py``: ``init_params``, ``value``, ``optimizer``); only the interior operator is
the caller's, so a PDE with a known solution (the heat equation ``F = sigma^2 / 2 u_xx``) checks
the machinery the predictor's HJB relies on. ``T`` and ``D`` are ``config.horizon`` and
``config.domain``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosfm._config import float_dtype
from chaosfm.predictor._config import DGMConfig
from chaosfm.predictor._kernel_dgm import TRAIN_COMPILER_OPTIONS, Params, init_params, optimizer, value

Operator = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
"""``F(t, x, u, u_x, u_xx)`` on scalars: the PDE is ``u_t + F = 0``."""


class PDESolution(NamedTuple):
    params: Params  # the DGM network: evaluate with ``value(params, t, x)``
    losses: jax.Array  # (steps,) Galerkin loss per Adam step


def pde_residual(params: Params, operator: Operator, t: jax.Array, x: jax.Array) -> jax.Array:
    """``u_t + F(t, x, u, u_x, u_xx)`` of the network at scalar ``(t, x)``."""

    def along_x(x):
        return jax.jvp(lambda x: value(params, t, x), (x,), (jnp.ones_like(x),))

    # Nested forward mode, as in kernel B (jax.hessian under jax.grad compiles far slower).
    (u, u_x), (_, u_xx) = jax.jvp(along_x, (x,), (jnp.ones_like(x),))
    _, u_t = jax.jvp(lambda t: value(params, t, x), (t,), (jnp.ones_like(t),))
    return u_t + operator(t, x, u, u_x, u_xx)


def terminal_loss(
    params: Params,
    operator: Operator,
    terminal: Callable[[jax.Array], jax.Array],
    boundary: Callable[[jax.Array, jax.Array], jax.Array],
    key: jax.Array,
    config: DGMConfig,
) -> jax.Array:
    """Interior residual + terminal + boundary mismatch at ``config.collocation`` random points."""
    n = config.collocation
    dtype = params["b_out"].dtype  # the network's: float64 with x64 on
    key_t, key_x, key_end, key_side = jax.random.split(key, 4)
    t = jax.random.uniform(key_t, (n,), dtype, 0.0, config.horizon)
    x = jax.random.uniform(key_x, (n,), dtype, -config.domain, config.domain)
    interior = jnp.mean(jax.vmap(lambda t, x: pde_residual(params, operator, t, x))(t, x) ** 2)
    x_end = jax.random.uniform(key_end, (n,), dtype, -config.domain, config.domain)
    at_end = jax.vmap(value, in_axes=(None, None, 0))(params, jnp.asarray(config.horizon, dtype), x_end)
    end = jnp.mean((at_end - jax.vmap(terminal)(x_end)) ** 2)
    t_side = jax.random.uniform(key_side, (n,), dtype, 0.0, config.horizon)
    side = jnp.where(jnp.arange(n) % 2 == 0, config.domain, -config.domain).astype(dtype)
    at_side = jax.vmap(value, in_axes=(None, 0, 0))(params, t_side, side)
    edge = jnp.mean((at_side - jax.vmap(boundary)(t_side, side)) ** 2)
    return interior + end + edge


def solve_terminal_pde(
    operator: Operator,
    terminal: Callable[[jax.Array], jax.Array],
    boundary: Callable[[jax.Array, jax.Array], jax.Array],
    config: DGMConfig,
    steps: int,
    *,
    key: jax.Array,
    learning_rate_decay: float = 1.0,
) -> PDESolution:
    """Train a fresh DGM network on ``u_t + F = 0``, ``u(T) = g``, ``u(t, +-D) = h`` by Adam.

    Args:
        operator: ``F(t, x, u, u_x, u_xx)`` on scalars.
        terminal: ``g(x)`` on a scalar.
        boundary: ``h(t, x)`` on scalars, evaluated at ``x = +-config.domain``.
        config: network width/depth, ``horizon`` T, ``domain`` D, ``collocation`` points per
            step, ``learning_rate``.
        steps: Adam steps.
        key: split into the initialisation and one collocation draw per step.
        learning_rate_decay: the step size decays exponentially to this fraction of
            ``config.learning_rate`` over ``steps`` (1: constant, kernel B's online setting).

    Returns:
        ``PDESolution(params, losses)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    if not 0.0 < learning_rate_decay <= 1.0:
        raise ValueError(f"learning_rate_decay must be in (0, 1]; got {learning_rate_decay}")
    key_init, key_train = jax.random.split(key)
    params = init_params(key_init, config, float_dtype())
    schedule = optax.exponential_decay(config.learning_rate, steps, learning_rate_decay)
    opt = optimizer(config) if learning_rate_decay == 1.0 else optax.chain(
        optax.clip_by_global_norm(10.0), optax.adam(schedule)
    )

    # Kernel B's compiler options: the Galerkin gradient compiles ~2x faster without LLVM passes.
    @functools.partial(jax.jit, compiler_options=TRAIN_COMPILER_OPTIONS)
    def run(params, keys):
        def step(carry, key):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(terminal_loss)(params, operator, terminal, boundary, key, config)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), keys)
        return params, losses

    params, losses = run(params, jax.random.split(key_train, steps))
    return PDESolution(params, losses)
