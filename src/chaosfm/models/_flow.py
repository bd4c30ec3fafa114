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

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm.models._base import init_rng, normal_init, rms_norm
from chaosfm.models._mamba import Mamba2Mixer, MambaConfig, MixerState

__all__ = ["FlowConfig", "FlowMamba", "StepHead", "flow_loss"]

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
    squares: bool = False  # the readout also sees the squares of the last hidden layer (Pathak et al. 2018)
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


def _leading(bias: Float[Array, " n"], ndim: int) -> Array:
    """``bias`` with leading unit axes, to add to an array of ``ndim`` axes (no implicit rank
    promotion)."""
    return bias.reshape((1,) * (ndim - 1) + bias.shape)


class StepHead(eqx.Module):
    """The step function ``f(x_t, h_t)``: an MLP whose linear readout sees its input and every
    hidden layer (a dense readout), so that the readout can be refitted in closed form by ridge
    regression on the hidden features (:func:`readout_features`), the way a reservoir's is."""

    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    biases: tuple[Float[Array, " fan_out"], ...]
    readout: Float[Array, "features channels"]
    readout_bias: Float[Array, " channels"]
    squares: bool = eqx.field(static=True)

    def __init__(self, fan_in: int, width: int, layers: int, channels: int, rng: np.random.Generator,
                 squares: bool = False):
        self.squares = squares
        sizes = [fan_in] + [width] * layers
        self.weights = tuple(normal_init(rng, (a, b), 1.0 / np.sqrt(a)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = tuple(jnp.zeros((b,), _F32) for b in sizes[1:])
        features = fan_in + width * (layers + (1 if squares else 0))
        self.readout = normal_init(rng, (features, channels), 0.1 / np.sqrt(features))
        self.readout_bias = jnp.zeros((channels,), _F32)

    def features(self, x: Float[Array, "... fan_in"]) -> Float[Array, "... features"]:
        """The readout's input: ``x`` and the output of every hidden layer (and the squares of the
        last, with ``squares``: a quadratic readout, as Pathak et al. 2018 give a reservoir's),
        concatenated."""
        outputs = [x]
        for w, b in zip(self.weights, self.biases):
            outputs.append(jax.nn.gelu(outputs[-1] @ w + _leading(b, x.ndim)))
        if self.squares:
            outputs.append(outputs[-1] ** 2)
        return jnp.concatenate(outputs, axis=-1)

    def __call__(self, x: Float[Array, "... fan_in"]) -> Float[Array, "... channels"]:
        return self.features(x) @ self.readout + _leading(self.readout_bias, x.ndim)


class FlowMamba(eqx.Module):
    """``x_{t+1} = x_t + scale * f(x_t, Mamba(x_{<=t})_t)`` over normalised states (see the module)."""

    config: FlowConfig = eqx.field(static=True)
    w_in: Float[Array, "channels d_model"]
    layers: tuple[Mamba2Mixer, ...]
    step: StepHead

    def __init__(self, config: FlowConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.config = config
        mixer = config.mixer_config()
        self.w_in = normal_init(rng, (config.channels, config.d_model), 1.0 / np.sqrt(config.channels))
        self.layers = tuple(Mamba2Mixer(mixer, key=rng) for _ in range(config.n_layers))
        self.step = StepHead(
            config.channels + config.d_model, config.mlp_width, config.mlp_layers, config.channels, rng,
            squares=config.squares,
        )

    def init_state(self) -> tuple[MixerState, ...]:
        return tuple(layer.init_state() for layer in self.layers)

    def step_input(
        self, x: Float[Array, "time channels"], state: tuple[MixerState, ...] | None = None, *, reference: bool = False
    ) -> tuple[Float[Array, "time fan_in"], tuple[MixerState, ...] | None]:
        """``[x_t, h_t]`` after each row (the step head's input), and the state after the last
        (``None`` without a state in)."""
        h = x.astype(jnp.dtype(self.config.dtype)) @ self.w_in.astype(jnp.dtype(self.config.dtype))
        states = (None,) * len(self.layers) if state is None else state
        new_state = []
        for layer, layer_state in zip(self.layers, states):
            update, layer_state = layer(rms_norm(h), layer_state, reference=reference)
            h = h + update.astype(h.dtype)
            new_state.append(layer_state)
        context = rms_norm(h).astype(_F32)
        return jnp.concatenate([x.astype(_F32), context], axis=-1), (None if state is None else tuple(new_state))

    def __call__(
        self, x: Float[Array, "time channels"], state: tuple[MixerState, ...] | None = None, *, reference: bool = False
    ) -> tuple[Float[Array, "time channels"], tuple[MixerState, ...] | None]:
        """The predicted increment ``f`` (in units of ``scale``) after each row, and the state after
        the last (``None`` without a state in)."""
        inputs, state = self.step_input(x, state, reference=reference)
        return self.step(inputs), state

    def readout_features(self, x: Float[Array, "time channels"]) -> Float[Array, "time features"]:
        """What the step head's readout sees after each row of ``x`` (read from its start)."""
        return self.step.features(self.step_input(x)[0])

    def with_readout(self, weights: Float[Array, "features channels"], bias: Float[Array, " channels"]) -> "FlowMamba":
        """The same model with another readout (e.g. refitted by ridge regression)."""
        return eqx.tree_at(
            lambda m: (m.step.readout, m.step.readout_bias), self,
            (jnp.asarray(weights, _F32), jnp.asarray(bias, _F32)),
        )

    def read(self, prefix: Float[Array, "time channels"]) -> tuple[MixerState, ...]:
        """The stack's state after reading ``prefix`` (chunked scan; zero rows: the initial state)."""
        state = self.init_state()
        if prefix.shape[0]:
            _, state = self.step_input(prefix, state)
        return state

    def run(
        self,
        state: tuple[MixerState, ...],
        start: Float[Array, " channels"],
        steps: int,
        scale: Float[Array, " channels"],
        bounds: tuple[Float[Array, " channels"], Float[Array, " channels"]] | None = None,
    ) -> Float[Array, "steps channels"]:
        """``steps`` states after ``start``, each from the model's own previous prediction, from
        the stack's ``state`` before ``start`` was read (the literal recurrence, one row at a time).

        ``bounds`` (low, high) clip every state: a run that leaves the attractor stays finite."""

        def advance(carried, _):
            current, state = carried
            increment, state = self(current[None, :], state, reference=True)
            following = current + scale * increment[0]
            if bounds is not None:
                following = jnp.clip(following, bounds[0], bounds[1])
            return (following, state), following

        _, path = jax.lax.scan(advance, (start, state), None, length=steps)
        return path

    def rollout(
        self,
        context: Float[Array, "time channels"],
        steps: int,
        scale: Float[Array, " channels"],
        start: Float[Array, " channels"] | None = None,
    ) -> Float[Array, "steps channels"]:
        """The ``steps`` states after ``context``, closed loop; ``start`` replaces the context's
        last state as the first input (a perturbed start)."""
        return self.run(self.read(context[:-1]), context[-1] if start is None else start, steps, scale)


def flow_loss(
    model: FlowMamba,
    batch: dict[str, Array],
    key: Any = None,
    *,
    warmup: int,
    rollout: int = 0,
    rollout_weight: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """Teacher-forced one-step loss, plus the closed-loop rollout loss when ``rollout > 0``.

    Both are mean squared errors in units of ``scale`` (one step's typical increment), so that
    the rollout term, an error in states, weighs like the one-step term.

    Args:
        model: the model.
        batch: ``states`` ``(B, T, C)`` in normalised units and ``scale`` ``(B, T, C)``, the
            per-channel spread of one step's increment of each window's series (constant along
            T); with a rollout, the model reads the first ``T - rollout`` rows and rolls out the
            last ``rollout``.
        key: unused (no dropout); the loop's signature.
        warmup: leading rows whose one-step error is not counted (the state is still filling).
        rollout: closed-loop steps K.
        rollout_weight: weight of the rollout term.

    Returns:
        The loss, with ``one_step`` and ``rollout`` as metrics.
    """
    del key
    states, scale = batch["states"], batch["scale"][:, :1]  # scale: (B, 1, C)
    length = states.shape[1]
    teacher = states if rollout == 0 else states[:, : length - rollout]
    increments = (teacher[:, 1:] - teacher[:, :-1]) / scale  # (B, T - 1, C)
    predicted, _ = jax.vmap(lambda x: model(x[:-1]))(teacher)
    one_step = jnp.mean((predicted[:, warmup:] - increments[:, warmup:]) ** 2)
    metrics = {"one_step": one_step}
    loss = one_step
    if rollout:
        path = jax.vmap(lambda x, s: model.rollout(x, rollout, s))(teacher, scale[:, 0])  # (B, K, C)
        rolled = jnp.mean(((path - states[:, length - rollout :]) / scale) ** 2)
        metrics["rollout"] = rolled
        loss = loss + rollout_weight * rolled
    return loss, metrics
