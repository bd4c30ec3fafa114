"""A Mamba-2 model of a dynamical system's flow map that reads its context: the learned forecaster of
continuous trajectories.

:class:`FlowMamba` reads normalised states ``x_0 .. x_t`` and predicts the next state as a residual
step, ``x_{t+1} = x_t + scale * f(x_t, h_t)``, where ``h_t`` is the output of a stack of pre-norm
residual :class:`~chaosfm.models.Mamba2Mixer` layers over the states up to ``t`` (so the step can
depend on everything the context shows about the system, not only on the current state) and ``f``
is an MLP of the current state beside it. ``scale`` is the per-channel spread of one step's
increment, measured by the caller on training rows: the MLP's output is of order one.

Training (:func:`flow_loss`): teacher forcing on every position of a window (one-step increments),
then, with ``rollout > 0``, the model reads the window's first rows and runs ``rollout`` steps on
its own predictions (BPTT through the rollout), the loss on the rolled-out states: a model trained
only one step ahead drifts off the attractor in closed loop. :meth:`FlowMamba.forecast` runs the
stack over a context (chunked SSD) and then rolls out one step at a time from the carried state
(the literal recurrence, cheap for one step).

Dimension letters: T time (rows), C channels (state dimension), D model width, K rollout steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm.models._base import init_rng, normal_init, rms_norm
from chaosfm.models._mamba import Mamba2Mixer, MambaConfig, MixerState

__all__ = ["FlowConfig", "FlowMamba", "flow_loss"]

_F32 = jnp.float32


@dataclass(frozen=True)
class FlowConfig:
    """Shapes of a :class:`FlowMamba`; saved beside the weights."""

    channels: int  # C, the state dimension of the system
    d_model: int = 64  # width of the Mamba stream that reads the context
    n_layers: int = 2  # Mamba-2 mixers over the context
    d_state: int = 16  # SSM state size per head
    head_dim: int = 16  # heads = expand * d_model / head_dim
    expand: int = 2
    d_conv: int = 4
    chunk_size: int = 64
    dt_min: float = 1e-3  # SSM step sizes start log-uniform in [dt_min, dt_max]: memories of 10-1000 rows
    dt_max: float = 1e-1
    mlp_width: int = 128  # the step MLP f(x_t, h_t): width and hidden layers
    mlp_layers: int = 3
    dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                    ("channels", "d_model", "n_layers", "d_state", "head_dim", "mlp_width", "mlp_layers")
                    if getattr(self, name) < 1]
        if problems:
            raise ValueError("; ".join(problems))

    def mixer_config(self) -> MambaConfig:
        return MambaConfig(
            vocab_size=2, context_length=self.chunk_size, d_model=self.d_model, n_layers=self.n_layers,
            d_state=self.d_state, head_dim=self.head_dim, expand=self.expand, d_conv=self.d_conv,
            chunk_size=self.chunk_size, dt_min=self.dt_min, dt_max=self.dt_max, dtype=self.dtype,
        )


class _StepMLP(eqx.Module):
    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    biases: tuple[Float[Array, " fan_out"], ...]

    def __init__(self, sizes: list[int], rng: np.random.Generator):
        self.weights = tuple(
            normal_init(rng, (a, b), (1.0 if i < len(sizes) - 2 else 0.1) / np.sqrt(a))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.biases = tuple(jnp.zeros((b,), _F32) for b in sizes[1:])

    def __call__(self, x: Float[Array, "... fan_in"]) -> Float[Array, "... fan_out"]:
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = jax.nn.gelu(x)
        return x


class FlowMamba(eqx.Module):
    """``x_{t+1} = x_t + scale * f(x_t, Mamba(x_{<=t})_t)`` over normalised states (see the module)."""

    config: FlowConfig = eqx.field(static=True)
    w_in: Float[Array, "channels d_model"]
    layers: tuple[Mamba2Mixer, ...]
    step: _StepMLP

    def __init__(self, config: FlowConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.config = config
        mixer = config.mixer_config()
        self.w_in = normal_init(rng, (config.channels, config.d_model), 1.0 / np.sqrt(config.channels))
        self.layers = tuple(Mamba2Mixer(mixer, key=rng) for _ in range(config.n_layers))
        sizes = [config.channels + config.d_model] + [config.mlp_width] * config.mlp_layers + [config.channels]
        self.step = _StepMLP(sizes, rng)

    def init_state(self) -> tuple[MixerState, ...]:
        return tuple(layer.init_state() for layer in self.layers)

    def __call__(
        self, x: Float[Array, "time channels"], state: tuple[MixerState, ...] | None = None, *, reference: bool = False
    ) -> tuple[Float[Array, "time channels"], tuple[MixerState, ...] | None]:
        """The predicted increment ``f`` (in units of ``scale``) after each row, and the state after
        the last (``None`` without a state in)."""
        h = x.astype(jnp.dtype(self.config.dtype)) @ self.w_in.astype(jnp.dtype(self.config.dtype))
        states = (None,) * len(self.layers) if state is None else state
        new_state = []
        for layer, layer_state in zip(self.layers, states):
            update, layer_state = layer(rms_norm(h), layer_state, reference=reference)
            h = h + update.astype(h.dtype)
            new_state.append(layer_state)
        context = rms_norm(h).astype(_F32)
        step = self.step(jnp.concatenate([x.astype(_F32), context], axis=-1))
        return step, (None if state is None else tuple(new_state))

    def rollout(
        self,
        context: Float[Array, "time channels"],
        steps: int,
        scale: Float[Array, " channels"],
        start: Float[Array, " channels"] | None = None,
    ) -> Float[Array, "steps channels"]:
        """The ``steps`` states after ``context``, each from the model's own previous prediction.

        ``start`` replaces the context's last state as the first input (a perturbed start).
        """
        prefix = context[:-1]
        last = context[-1] if start is None else start
        state = self.init_state()
        if prefix.shape[0]:
            _, state = self(prefix, state)

        def advance(carried, _):
            current, state = carried
            increment, state = self(current[None, :], state, reference=True)
            following = current + scale * increment[0]
            return (following, state), following

        _, path = jax.lax.scan(advance, (last, state), None, length=steps)
        return path


def flow_loss(
    model: FlowMamba,
    batch: dict[str, Array],
    key: Any = None,
    *,
    scale: Float[Array, " channels"],
    warmup: int,
    rollout: int = 0,
    rollout_weight: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """Teacher-forced one-step loss, plus the closed-loop rollout loss when ``rollout > 0``.

    Args:
        model: the model.
        batch: ``states`` ``(B, T, C)`` in normalised units; with a rollout, the model reads the
            first ``T - rollout`` rows and rolls out the last ``rollout``.
        key: unused (no dropout); the loop's signature.
        scale: per-channel spread of one step's increment (normalised units).
        warmup: leading rows whose one-step error is not counted (the state is still filling).
        rollout: closed-loop steps.
        rollout_weight: weight of the rollout term.

    Returns:
        The loss, with ``one_step`` and ``rollout`` (mean squared errors) as metrics.
    """
    del key
    states = batch["states"]
    size, length, _ = states.shape
    teacher = states if rollout == 0 else states[:, : length - rollout]
    increments = (teacher[:, 1:] - teacher[:, :-1]) / scale  # (B, T - 1, C)
    predicted, _ = jax.vmap(lambda x: model(x[:-1]))(teacher)
    one_step = jnp.mean((predicted[:, warmup:] - increments[:, warmup:]) ** 2)
    metrics = {"one_step": one_step}
    loss = one_step
    if rollout:
        path = jax.vmap(lambda x: model.rollout(x, rollout, scale))(teacher)  # (B, K, C)
        rolled = jnp.mean((path - states[:, length - rollout :]) ** 2)
        metrics["rollout"] = rolled
        loss = loss + rollout_weight * rolled
    return loss, metrics


def flow_config_from_json(data: dict[str, Any]) -> FlowConfig:
    fields = {f.name for f in dataclasses.fields(FlowConfig)}
    return FlowConfig(**{k: v for k, v in data.items() if k in fields})
