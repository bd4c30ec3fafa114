"""Kernel B: a Deep Galerkin network for a risk-sensitive HJB equation, with a collapse monitor.

The standardised deviation ``z`` of the recent path from its mean is modelled as an
Ornstein-Uhlenbeck process ``dZ = -theta Z dt + sigma dW`` (theta, sigma by AR(1) on the buffer).
A controller adds drift ``sigma u`` at cost ``u^2 / 2`` and pays ``g(Z_T)`` at the horizon ``T``;
the value function solves the HJB equation

    V_t - theta z V_z + sigma^2 / 2 V_zz - sigma^2 / 2 V_z^2 = 0,   V(T, z) = g(z),

on ``[0, T] x [-D, D]`` with ``V(t, +-D) = g(+-D)`` (far field), and the optimal drift is
``-theta z - sigma^2 V_z`` (Fleming & Soner 2006, ch. VI). With ``g = -log`` of a kernel density
estimate of the buffer's ``z``, this is the Doob h-transform steering the path towards where it
has recently lived; the kernel's prediction is that drift over one step.

``V`` is a DGM network (Sirignano & Spiliopoulos 2018, sec. 4: gated "DGM layers") trained on the
Galerkin loss: squared residual at random interior points (derivatives by nested ``jax.jvp``,
the forward-mode form of ``jax.hessian`` for scalar inputs; ``vmap``) plus squared terminal and boundary mismatch. ``fit`` runs many Adam steps; the online
update runs ``online_steps`` per observation.

Collapse monitor: the Gibbs density ``rho(z) ~ exp(-V(0, z))`` on a grid has normalised entropy
``H / log(grid)`` in ``[0, 1]``; a network stuck at the trivial constant solution gives a flat
``rho`` and an entropy of 1. The step is ``collapsed`` when the entropy exceeds
``1 - collapse_tolerance``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import DGMConfig

if TYPE_CHECKING:
    import optax

Params = dict

# XLA options for jitting ``train``: its Galerkin gradient (forward mode inside reverse mode) is
# the largest program here; without LLVM's optimisation passes it compiles in ~5 s instead of
# ~11 s and 300 Adam steps run in ~0.5 s instead of ~0.25 s (measured): a good trade for a fit
# that runs once per stream.
TRAIN_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


class DGMProblem(NamedTuple):
    theta: jax.Array
    sigma: jax.Array
    terminal_points: jax.Array  # (T,) z values the terminal density is built from
    terminal_weights: jax.Array  # (T,) mask/weights of those points
    bandwidth: jax.Array


class DGMState(NamedTuple):
    params: Params
    opt_state: optax.OptState
    problem: DGMProblem
    slope: jax.Array  # (drift_grid,) V_z(0, z) of params on value_grid: the per-step drift reads it
    entropy: jax.Array  # the collapse monitor of params (see collapse_monitor), as of training
    collapsed: jax.Array  # bool


class DGMOutput(NamedTuple):
    prediction: jax.Array  # drift of z over one step
    entropy: jax.Array  # normalised entropy of exp(-V(0, z)) on the grid
    collapsed: jax.Array  # bool
    loss: jax.Array


def init_params(key: jax.Array, config: DGMConfig, dtype=jnp.float32) -> Params:
    """DGM network parameters: input (t, z) -> width -> ``depth`` gated layers -> scalar."""
    width = config.width
    keys = iter(jax.random.split(key, 2 + 8 * config.depth))

    def dense(fan_in, fan_out):
        scale = jnp.sqrt(1.0 / fan_in)
        return jax.random.normal(next(keys), (fan_in, fan_out), dtype) * scale

    params = {"w_in": dense(2, width), "b_in": jnp.zeros(width, dtype), "layers": []}
    for _ in range(config.depth):
        layer = {}
        for gate in ("z", "g", "r", "h"):
            layer[f"u_{gate}"] = dense(2, width)
            layer[f"w_{gate}"] = dense(width, width)
            layer[f"b_{gate}"] = jnp.zeros(width, dtype)
        params["layers"].append(layer)
    params["w_out"] = dense(width, 1)[:, 0]
    params["b_out"] = jnp.zeros((), dtype)
    return params


def value(params: Params, t: jax.Array, z: jax.Array) -> jax.Array:
    """``V(t, z)`` for scalars ``t``, ``z`` (vmap for batches)."""
    x = jnp.stack([t, z])
    s = jnp.tanh(x @ params["w_in"] + params["b_in"])
    for layer in params["layers"]:
        gate_z = jnp.tanh(x @ layer["u_z"] + s @ layer["w_z"] + layer["b_z"])
        gate_g = jnp.tanh(x @ layer["u_g"] + s @ layer["w_g"] + layer["b_g"])
        gate_r = jnp.tanh(x @ layer["u_r"] + s @ layer["w_r"] + layer["b_r"])
        h = jnp.tanh(x @ layer["u_h"] + (s * gate_r) @ layer["w_h"] + layer["b_h"])
        s = (1.0 - gate_g) * h + gate_z * s
    return s @ params["w_out"] + params["b_out"]


def kde_terminal(problem: DGMProblem, z: jax.Array) -> jax.Array:
    """``g(z) = -log`` of a Gaussian KDE of the terminal points (masked), floored."""
    w = problem.terminal_weights / jnp.maximum(jnp.sum(problem.terminal_weights), 1e-12)
    u = (z - problem.terminal_points) / problem.bandwidth
    density = jnp.sum(w * jnp.exp(-0.5 * u**2)) / (problem.bandwidth * jnp.sqrt(2 * jnp.pi))
    return -jnp.log(density + 1e-4)


def galerkin_loss(
    params: Params,
    problem: DGMProblem,
    key: jax.Array,
    config: DGMConfig,
    terminal: Callable[[DGMProblem, jax.Array], jax.Array] = kde_terminal,
    boundary: Callable[[DGMProblem, jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Interior PDE residual + terminal + boundary mismatch at random collocation points."""
    n = config.collocation
    key_t, key_z, key_b, key_s = jax.random.split(key, 4)
    dtype = problem.theta.dtype
    t = jax.random.uniform(key_t, (n,), dtype, 0.0, config.horizon)
    z = jax.random.uniform(key_z, (n,), dtype, -config.domain, config.domain)

    def residual(t, z):
        # Forward mode for the scalar inputs: jax.hessian (jacfwd of jacrev) under the training
        # jax.grad made XLA compile for ~30 s; nested jvps compile in a few.
        def along_z(z):
            return jax.jvp(lambda z: value(params, t, z), (z,), (jnp.ones_like(z),))

        (_, v_z), (_, v_zz) = jax.jvp(along_z, (z,), (jnp.ones_like(z),))
        _, v_t = jax.jvp(lambda t: value(params, t, z), (t,), (jnp.ones_like(t),))
        s2 = problem.sigma**2
        return v_t - problem.theta * z * v_z + 0.5 * s2 * v_zz - 0.5 * s2 * v_z**2

    interior = jnp.mean(jax.vmap(residual)(t, z) ** 2)
    z_end = jax.random.uniform(key_s, (n,), dtype, -config.domain, config.domain)
    horizon = jnp.full((n,), config.horizon, dtype)
    end = jax.vmap(value, in_axes=(None, 0, 0))(params, horizon, z_end)
    terminal_loss = jnp.mean((end - jax.vmap(lambda z: terminal(problem, z))(z_end)) ** 2)
    t_b = jax.random.uniform(key_b, (n,), dtype, 0.0, config.horizon)
    side = jnp.where(jnp.arange(n) % 2 == 0, config.domain, -config.domain).astype(dtype)
    target = (
        jax.vmap(lambda z: terminal(problem, z))(side)
        if boundary is None
        else jax.vmap(lambda t, z: boundary(problem, t, z))(t_b, side)
    )
    boundary_loss = jnp.mean((jax.vmap(value, in_axes=(None, 0, 0))(params, t_b, side) - target) ** 2)
    return interior + terminal_loss + boundary_loss


def optimizer(config: DGMConfig) -> optax.GradientTransformation:
    import optax  # on first trace: a restart that loads its programs never needs it

    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(config.learning_rate))


def train(
    state: DGMState, key: jax.Array, steps: int, config: DGMConfig, **loss_options
) -> tuple[DGMState, jax.Array]:
    """``steps`` Adam steps on the Galerkin loss; returns the state and the last loss."""
    import optax

    opt = optimizer(config)

    def step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(galerkin_loss)(params, state.problem, key, config, **loss_options)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    if steps == 0:
        return state, jnp.zeros((), state.problem.theta.dtype)
    (params, opt_state), losses = jax.lax.scan(step, (state.params, state.opt_state), jax.random.split(key, steps))
    return _with_params(state, params, opt_state, config), losses[-1]


def _with_params(state: DGMState, params: Params, opt_state: optax.OptState, config: DGMConfig) -> DGMState:
    """``state`` with new network weights and what is derived from them once per training: the
    ``V_z`` table and the collapse monitor (both functions of the weights only)."""
    entropy, collapsed = collapse_monitor(params, config)
    return DGMState(params, opt_state, state.problem, value_slope(params, config), entropy, collapsed)


def value_grid(config: DGMConfig, dtype=jnp.float32) -> jax.Array:
    """The ``(drift_grid,)`` points of z in ``[-domain, domain]`` where ``V_z`` is tabulated."""
    return jnp.linspace(-config.domain, config.domain, config.drift_grid, dtype=dtype)


def value_slope(params: Params, config: DGMConfig) -> jax.Array:
    """``V_z(0, z)`` on :func:`value_grid`: computed once per training, not once per step."""
    grid = value_grid(config, params["b_out"].dtype)  # the network's dtype (float64 with x64 on)
    return jax.vmap(jax.grad(value, argnums=2), in_axes=(None, None, 0))(params, jnp.zeros((), grid.dtype), grid)


def path_moments(path: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted mean and standard deviation of a ``(T,)`` path: ``z = (path - mean) / std``."""
    total = jnp.maximum(jnp.sum(weights), 2.0)
    mean = jnp.sum(weights * path) / total
    std = jnp.sqrt(jnp.sum(weights * (path - mean) ** 2) / total + 1e-8)
    return mean, std


def fit_problem(path: jax.Array, weights: jax.Array) -> tuple[DGMProblem, jax.Array, jax.Array]:
    """OU parameters and terminal density from a ``(T,)`` path (``weights`` mask valid slots).

    Returns the problem, the path's mean and its standard deviation (z = (path - mean) / std).
    """
    mean, std = path_moments(path, weights)
    z = (path - mean) / std
    pair = weights[1:] * weights[:-1]
    phi = jnp.sum(pair * z[1:] * z[:-1]) / jnp.maximum(jnp.sum(pair * z[:-1] ** 2), 1e-8)
    phi = jnp.clip(phi, 0.05, 0.995)
    theta = -jnp.log(phi)
    resid = jnp.sum(pair * (z[1:] - phi * z[:-1]) ** 2) / jnp.maximum(jnp.sum(pair), 1.0)
    sigma = jnp.sqrt(jnp.maximum(resid * 2 * theta / (1 - phi**2), 1e-4))
    problem = DGMProblem(
        theta=theta,
        sigma=sigma,
        terminal_points=z,
        terminal_weights=weights,
        bandwidth=jnp.asarray(0.5, path.dtype),
    )
    return problem, mean, std


def init_dgm(key: jax.Array, problem: DGMProblem, config: DGMConfig) -> DGMState:
    params = init_params(key, config, problem.theta.dtype)
    empty = DGMState(None, None, problem, None, None, None)
    return _with_params(empty, params, optimizer(config).init(params), config)


def collapse_monitor(params: Params, config: DGMConfig) -> tuple[jax.Array, jax.Array]:
    """Normalised entropy of ``exp(-V(0, z))`` on the grid, and whether it reads as collapsed."""
    grid = jnp.linspace(-config.domain, config.domain, config.entropy_grid)
    v = jax.vmap(value, in_axes=(None, None, 0))(params, jnp.zeros((), grid.dtype), grid)
    rho = jax.nn.softmax(-v)
    entropy = -jnp.sum(rho * jnp.log(jnp.maximum(rho, 1e-30))) / jnp.log(config.entropy_grid)
    return entropy, entropy > 1.0 - config.collapse_tolerance


def optimal_drift(params: Params, problem: DGMProblem, z: jax.Array) -> jax.Array:
    """``-theta z - sigma^2 V_z(0, z)``: the controlled drift of z."""
    v_z = jax.grad(value, argnums=2)(params, jnp.zeros((), z.dtype), z)
    return -problem.theta * z - problem.sigma**2 * v_z


def refresh_dgm(
    state: DGMState, path: jax.Array, weights: jax.Array, config: DGMConfig, *, key: jax.Array
) -> tuple[DGMState, DGMOutput]:
    """The slow half of an update: refit the OU and terminal density, train if ``online_steps``.

    Returns the new state and a ``DGMOutput`` whose ``prediction`` is left at zero (see
    :func:`predict_dgm`).
    """
    problem, _, _ = fit_problem(path, weights)
    state = state._replace(problem=problem)
    state, loss = train(state, key, config.online_steps, config)  # updates the monitor if it trains
    zero = jnp.zeros((), path.dtype)
    return state, DGMOutput(prediction=zero, entropy=state.entropy, collapsed=state.collapsed, loss=loss)


def predict_dgm(state: DGMState, path: jax.Array, weights: jax.Array, config: DGMConfig) -> jax.Array:
    """The fast half: the controlled drift at the path's current ``z``, in the path's units.

    ``z`` is taken from the path as it is now; the OU parameters and the network are those of
    the last :func:`refresh_dgm`. ``V_z`` is interpolated in the table ``state.slope`` made when
    the network last trained (:func:`optimal_drift` is the exact form): a network gradient per
    step was a third of the predictor's step time.
    """
    mean, std = path_moments(path, weights)
    z_now = jnp.clip((path[-1] - mean) / std, -config.domain, config.domain)
    # Linear interpolation on the uniform grid by index arithmetic (jnp.interp's binary search
    # is a loop of kernels on CPU).
    spacing = 2.0 * config.domain / (config.drift_grid - 1)
    position = (z_now + config.domain) / spacing
    left = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, config.drift_grid - 2)
    frac = position - left
    v_z = (1.0 - frac) * state.slope[left] + frac * state.slope[left + 1]
    drift = -state.problem.theta * z_now - state.problem.sigma**2 * v_z
    return jnp.clip(drift, -5.0, 5.0) * std


def predictive_std(state: DGMState, path: jax.Array, weights: jax.Array) -> jax.Array:
    """Standard deviation of the next increment around :func:`predict_dgm`, in the path's units.

    The control moves the drift only; the noise over one step is the OU transition's,
    ``sigma sqrt((1 - exp(-2 theta)) / (2 theta))`` in units of ``z``, times the path's standard
    deviation to come back to the path's units (the drift is scaled the same way). The OU
    ``sigma`` alone is in units of ``z``: on sp500 the path's standard deviation is ~3.7, and
    sampling with ``sigma`` alone gave a spread 0.29 times the realised one (its 80% interval
    covered 20% of the next increments).
    """
    _, std = path_moments(path, weights)
    theta = state.problem.theta
    transition = jnp.sqrt(-jnp.expm1(-2.0 * theta) / (2.0 * theta))
    return state.problem.sigma * transition * std


def update_dgm(
    state: DGMState, path: jax.Array, weights: jax.Array, config: DGMConfig, *, key: jax.Array
) -> tuple[DGMOutput, DGMState]:
    """Refit the OU and terminal density to the recent path, train online, predict the increment.

    ``path`` is the ``(T,)`` cumulative standardised path; the prediction is in its units.
    """
    state, out = refresh_dgm(state, path, weights, config, key=key)
    return out._replace(prediction=predict_dgm(state, path, weights, config)), state
