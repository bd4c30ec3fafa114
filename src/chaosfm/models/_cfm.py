"""Conditional flow matching with minibatch optimal-transport couplings, and its ODE sampler.

A velocity field ``v(x, t, c)`` is trained so that integrating ``dx/dt = v(x, t, c)`` from
``t = 0`` (Gaussian noise) to ``t = 1`` carries noise to the distribution of targets given the
condition ``c`` (Lipman et al. 2023, §4). The regression target on the straight path
``x_t = (1 - t) x_0 + t x_1 + sigma_min * eps`` is ``u = x_1 - x_0``. Noise and targets of a
minibatch are paired by an entropic OT plan (Tong et al. 2024, "OT-CFM", §3.2), computed with
``ott-jax``'s Sinkhorn, so paths cross less and a few ODE steps suffice. Each target keeps its own
condition: the noise is exchangeable, so pairing it by OT changes nothing but the path lengths.

Sampling integrates the ODE with ``diffrax`` (Heun, a fixed number of steps).

Dimension letters: B batch, D data (embedding) width, E condition width, S samples.
"""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from ott.geometry import pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from chaosfm.models._base import init_rng, normal_init

__all__ = ["VelocityField", "cfm_loss", "ot_coupling", "ot_plan", "sample_flow"]

_F32 = jnp.float32


def _time_features(t: Float[Array, ""], count: int) -> Float[Array, " features"]:
    """Sinusoidal features of ``t in [0, 1]`` at ``count / 2`` log-spaced frequencies."""
    freqs = jnp.exp(jnp.linspace(0.0, math.log(100.0), count // 2))
    angle = 2 * math.pi * t * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])


class VelocityField(eqx.Module):
    """MLP ``v(x, t, c)``: ``[x, time features, c] -> hidden (SiLU) x depth -> D``; one example."""

    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    biases: tuple[Float[Array, " fan_out"], ...]
    time_features: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        *,
        hidden: int = 64,
        depth: int = 2,
        time_features: int = 16,
        key: PRNGKeyArray | np.random.Generator,
    ):
        rng = init_rng(key)
        sizes = [dim + time_features + cond_dim] + [hidden] * depth + [dim]
        self.weights = tuple(
            normal_init(rng, (a, b), a**-0.5) if i < depth else jnp.zeros((a, b), _F32)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.biases = tuple(jnp.zeros((b,), _F32) for b in sizes[1:])
        self.time_features = time_features

    def __call__(
        self, x: Float[Array, " dim"], t: Float[Array, ""], cond: Float[Array, " cond"]
    ) -> Float[Array, " dim"]:
        h = jnp.concatenate([x.astype(_F32), _time_features(t, self.time_features), cond.astype(_F32)])
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = jax.nn.silu(h @ w + b)
        return h @ self.weights[-1] + self.biases[-1]


def ot_plan(
    source: Float[Array, "batch dim"],
    target: Float[Array, "batch2 dim"],
    *,
    epsilon: float = 0.05,
    max_iterations: int = 200,
) -> Float[Array, "batch batch2"]:
    """Entropic OT plan with uniform marginals between two point clouds (squared Euclidean cost).

    The cost is divided by its mean so ``epsilon`` is relative to the typical squared distance.
    The plan's row sums are ``1/B`` and its column sums ``1/B'`` (up to Sinkhorn's tolerance).
    """
    source, target = jax.lax.stop_gradient(source.astype(_F32)), jax.lax.stop_gradient(target.astype(_F32))
    geom = pointcloud.PointCloud(source, target, epsilon=epsilon, relative_epsilon="mean")
    problem = linear_problem.LinearProblem(geom)
    solver = sinkhorn.Sinkhorn(lse_mode=True, max_iterations=max_iterations, threshold=1e-4)
    # ott broadcasts internally; the project's strict rank promotion is relaxed for it only.
    with jax.numpy_rank_promotion("allow"):
        out = solver(problem)
    return jax.lax.stop_gradient(out.matrix)


def ot_coupling(
    key: PRNGKeyArray,
    source: Float[Array, "batch dim"],
    target: Float[Array, "batch dim"],
    *,
    epsilon: float = 0.05,
    max_iterations: int = 200,
) -> tuple[Array, Array]:
    """Indices ``(i, j)`` of ``B`` pairs drawn from the OT plan between source and target rows.

    Each target row is kept once (``j = arange(B)``) and given a source row drawn from the plan's
    column: conditions stay attached to their targets and every target is used.
    """
    plan = ot_plan(source, target, epsilon=epsilon, max_iterations=max_iterations)
    logits = jnp.log(jnp.maximum(plan.T, 1e-30))  # (target, source)
    i = jax.random.categorical(key, logits, axis=-1)
    return i, jnp.arange(target.shape[0])


def cfm_loss(
    field: VelocityField,
    key: PRNGKeyArray,
    target: Float[Array, "batch dim"],
    cond: Float[Array, "batch cond"],
    *,
    noise_scale: float = 1.0,
    sigma_min: float = 1e-3,
    epsilon: float = 0.05,
    use_ot: bool = True,
) -> Float[Array, ""]:
    """OT-CFM regression loss ``mean ||v(x_t, t, c) - (x_1 - x_0)||²`` (float32)."""
    noise_key, pair_key, time_key, jitter_key = jax.random.split(key, 4)
    batch, dim = target.shape
    x0 = noise_scale * jax.random.normal(noise_key, (batch, dim), _F32)
    x1 = target.astype(_F32)
    if use_ot:
        i, _ = ot_coupling(pair_key, x0, x1, epsilon=epsilon)
        x0 = x0[i]
    t = jax.random.uniform(time_key, (batch,), _F32)
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    xt = xt + sigma_min * jax.random.normal(jitter_key, xt.shape, _F32)
    predicted = jax.vmap(field)(xt, t, cond)
    return jnp.mean(jnp.sum((predicted - (x1 - x0)) ** 2, axis=-1))


def sample_flow(
    field: VelocityField,
    cond: Float[Array, " cond"],
    num_samples: int,
    dim: int,
    *,
    key: PRNGKeyArray,
    noise_scale: float = 1.0,
    steps: int = 8,
) -> Float[Array, "samples dim"]:
    """``num_samples`` draws for one condition: Heun steps of the ODE from noise at t=0 to t=1."""
    x0 = noise_scale * jax.random.normal(key, (num_samples, dim), _F32)

    def velocity(t, x, args):
        return jax.vmap(field, in_axes=(0, None, None))(x, t, cond)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(velocity),
        diffrax.Heun(),
        t0=0.0,
        t1=1.0,
        dt0=1.0 / steps,
        y0=x0,
        stepsize_controller=diffrax.ConstantStepSize(),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=steps + 1,
    )
    return solution.ys[0]
