"""A Mamba-2 backbone over real-valued causal features with a direction head and a regression head.

:class:`FeatureMamba` replaces the code models' embedding with a linear input projection of the
features, then runs pre-norm residual Mamba-2 mixers (:class:`~chaosfm.models.Mamba2Mixer`) and,
with ``attention_every = N``, a sliding-window attention block every N-th layer (the hybrid layout
of :class:`~chaosfm.models.Mamba`). The pooled representation of the window that ends at row t is
the final-normed hidden state at t itself (last-step pooling): it has read rows ``<= t`` only, so a
prediction at t is causal, and one pass over a history scores every row at once.

Two heads read it:

- *direction*: logits of the 3-class label (down, flat, up) of the forward H-row log return;
- *regression*: the 0.1 and 0.9 quantiles of the forward return, as ``m - softplus(a)`` and
  ``m + softplus(b)`` so they never cross, and the forward realized volatility. Targets are in
  standardised units (the job scales them with training statistics).

:func:`multitask_loss` weights the two task losses by learnable log-variances ``s = log sigma^2``
(Kendall, Gal & Cipolla 2018, "Multi-task learning using uncertainty to weigh losses", eq. 10):
``exp(-s_dir) CE + s_dir / 2 + exp(-s_reg) L_reg / 2 + s_reg / 2``, the classification term
without the 1/2 of a Gaussian likelihood as in their softmax derivation (eq. 10-12).

Called with a state from :meth:`FeatureMamba.init_state`, the model continues from an earlier
segment and returns the state after its last row: truncated BPTT and long-history scoring.

Dimension letters: T time (rows), F features, D model width.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm.models._base import init_rng, normal_init, rms_norm
from chaosfm.models._gpt import MLP, Attention, Block, KVMemory
from chaosfm.models._mamba import Mamba2Mixer, MambaConfig, MixerState, initial_layer_states

__all__ = [
    "FeatureMamba",
    "MultitaskConfig",
    "MultitaskOutput",
    "QUANTILE_LEVELS",
    "multitask_loss",
    "uncertainty_weighted",
]

QUANTILE_LEVELS = (0.1, 0.9)
_F32 = jnp.float32


@dataclass(frozen=True)
class MultitaskConfig:
    """Shapes and options of a :class:`FeatureMamba`; saved beside the weights."""

    n_features: int = 16  # input features per row (multitask_features gives 16)
    d_model: int = 64  # residual stream width
    n_layers: int = 2  # depth: mixers, and attention blocks when attention_every > 0
    d_state: int = 16  # SSM state size per head (even)
    head_dim: int = 16  # heads = expand * d_model / head_dim
    expand: int = 2  # inner width over d_model, Mamba's default
    d_conv: int = 4  # causal depthwise conv width, Mamba's default
    chunk_size: int = 64  # SSD chunk length
    dt_min: float = 1e-3  # initial step sizes log-uniform in [dt_min, dt_max]: slow heads remember
    dt_max: float = 1e-1  # ~1000 rows, fast ones ~10
    attention_every: int = 0  # 0: pure Mamba; N: every N-th layer is sliding-window attention
    attention_heads: int = 4
    attention_kv_heads: int = 2
    attention_window: int = 128  # rows each attention query sees (the sparse, local span)
    mlp_ratio: int = 4
    dtype: str = "float32"  # activations; SSM accumulations stay float32

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"n_features: must be positive, got {self.n_features}")
        if self.attention_window < 1:
            raise ValueError(f"attention_window: must be positive, got {self.attention_window}")
        self.mamba_config()  # the mixer's own checks, with the field names shared

    def mamba_config(self) -> MambaConfig:
        """The mixer / attention settings in the form :class:`Mamba2Mixer` reads."""
        return MambaConfig(
            vocab_size=2,  # unused: no embedding here
            context_length=self.attention_window,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=self.d_state,
            head_dim=self.head_dim,
            expand=self.expand,
            d_conv=self.d_conv,
            chunk_size=self.chunk_size,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            attention_every=self.attention_every,
            attention_heads=self.attention_heads,
            attention_kv_heads=self.attention_kv_heads,
            mlp_ratio=self.mlp_ratio,
            dtype=self.dtype,
        )

    def replace(self, **changes: Any) -> "MultitaskConfig":
        return dataclasses.replace(self, **changes)


class MultitaskOutput(NamedTuple):
    """Head outputs per row, in the standardised units of the targets."""

    direction_logits: Float[Array, "time 3"]
    quantiles: Float[Array, "time 2"]  # levels QUANTILE_LEVELS, increasing
    vol: Float[Array, " time"]


class FeatureMamba(eqx.Module):
    """Mamba-2 (optionally hybrid) over feature rows, with direction and regression heads."""

    config: MultitaskConfig = eqx.field(static=True)
    w_in: Float[Array, "features d_model"]
    b_in: Float[Array, " d_model"]
    layers: tuple[Mamba2Mixer | Block, ...]
    w_direction: Float[Array, "d_model 3"]
    b_direction: Float[Array, " 3"]
    w_regression: Float[Array, "d_model 4"]  # centre, low spread, high spread, vol
    b_regression: Float[Array, " 4"]
    log_vars: Float[Array, " 2"]  # s_dir, s_reg of the uncertainty weighting

    def __init__(self, config: MultitaskConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        mamba = config.mamba_config()
        self.config = config
        self.w_in = normal_init(rng, (config.n_features, config.d_model), config.n_features**-0.5)
        self.b_in = jnp.zeros((config.d_model,), _F32)
        layers: list[Mamba2Mixer | Block] = []
        for index in range(config.n_layers):
            if mamba.is_attention(index):
                attention = Attention(
                    config.d_model, config.attention_heads, config.attention_kv_heads,
                    config.attention_window, dtype=config.dtype, key=rng,
                )
                mlp = MLP(config.d_model, config.mlp_ratio * config.d_model, dtype=config.dtype, key=rng)
                layers.append(Block(attention, mlp))
            else:
                layers.append(Mamba2Mixer(mamba, key=rng))
        self.layers = tuple(layers)
        self.w_direction = normal_init(rng, (config.d_model, 3), 0.02)
        self.b_direction = jnp.zeros((3,), _F32)
        self.w_regression = normal_init(rng, (config.d_model, 4), 0.02)
        # Spreads start at the standard normal's 10%/90% distance from the centre (1.28).
        spread = math.log(math.expm1(1.2816))
        self.b_regression = jnp.asarray([0.0, spread, spread, 0.0], _F32)
        self.log_vars = jnp.zeros((2,), _F32)

    def init_state(self) -> tuple[MixerState | KVMemory, ...]:
        """The state before any row: what a long history is scored from."""
        return initial_layer_states(self.layers)

    def hidden(
        self,
        features: Float[Array, "time features"],
        *,
        state: tuple[MixerState | KVMemory, ...] | None = None,
        reference: bool = False,
    ) -> tuple[Float[Array, "time d_model"], tuple[MixerState | KVMemory, ...] | None]:
        """The pooled representation at each row (final-normed hidden state) and the state after."""
        dtype = jnp.dtype(self.config.dtype)
        h = (features.astype(_F32) @ self.w_in + self.b_in[None, :]).astype(dtype)
        states = (None,) * len(self.layers) if state is None else state
        new_state = []
        for layer, layer_state in zip(self.layers, states):
            if isinstance(layer, Block):
                h, layer_state = layer(h, layer_state)
            else:
                update, layer_state = layer(rms_norm(h), layer_state, reference=reference)
                h = h + update.astype(h.dtype)
            new_state.append(layer_state)
        return rms_norm(h).astype(_F32), (None if state is None else tuple(new_state))

    def __call__(
        self,
        features: Float[Array, "time features"],
        *,
        state: tuple[MixerState | KVMemory, ...] | None = None,
        reference: bool = False,
    ) -> tuple[MultitaskOutput, tuple[MixerState | KVMemory, ...] | None]:
        """Head outputs at every row (each reads rows ``<= t``) and the state after the last row."""
        pooled, state = self.hidden(features, state=state, reference=reference)
        logits = pooled @ self.w_direction + self.b_direction[None, :]
        raw = pooled @ self.w_regression + self.b_regression[None, :]
        centre = raw[:, 0]
        low = centre - jax.nn.softplus(raw[:, 1])
        high = centre + jax.nn.softplus(raw[:, 2])
        return MultitaskOutput(logits, jnp.stack([low, high], axis=-1), raw[:, 3]), state


def uncertainty_weighted(
    direction_loss: Float[Array, ""], regression_loss: Float[Array, ""], log_vars: Float[Array, " 2"]
) -> Float[Array, ""]:
    """``exp(-s0) L_dir + s0/2 + exp(-s1) L_reg / 2 + s1/2`` (Kendall et al. 2018, eq. 10).

    Minimised over ``s`` alone it is ``s0 = ln(2 L_dir)``, ``s1 = ln(L_reg)``: a task whose loss is
    large (noisy) is down-weighted, and the ``s/2`` terms stop the weights from collapsing to 0.
    """
    s = log_vars.astype(_F32)
    return (
        jnp.exp(-s[0]) * direction_loss + 0.5 * s[0] + 0.5 * jnp.exp(-s[1]) * regression_loss + 0.5 * s[1]
    )


def _pinball(y: Float[Array, "..."], q: Float[Array, "..."], level: float) -> Float[Array, "..."]:
    error = y - q
    return jnp.maximum(level * error, (level - 1.0) * error)


def multitask_loss(
    output: MultitaskOutput,
    direction: Int[Array, " time"],
    forward_return: Float[Array, " time"],
    forward_vol: Float[Array, " time"],
    mask: Bool[Array, " time"],
    log_vars: Float[Array, " 2"],
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Uncertainty-weighted loss over the rows where ``mask`` holds (any leading batch axes).

    ``L_dir`` is the mean cross-entropy of the direction; ``L_reg`` is the mean pinball loss at 0.1
    plus at 0.9 of the forward return plus the mean squared error of the forward volatility, all
    in standardised units. Masked rows may hold any value (NaN included): they never enter a sum.

    Returns:
        The weighted loss and its parts (``ce``, ``pinball_10``, ``pinball_90``, ``vol_mse``,
        ``accuracy``, ``weight_dir = exp(-s0)``, ``weight_reg = exp(-s1) / 2``).
    """
    weight = mask.astype(_F32)
    count = jnp.maximum(jnp.sum(weight), 1.0)

    def mean(x):
        return jnp.sum(jnp.where(mask, x, 0.0)) / count

    safe_direction = jnp.where(mask, direction, 0)
    y = jnp.where(mask, forward_return, 0.0)
    v = jnp.where(mask, forward_vol, 0.0)
    log_probs = jax.nn.log_softmax(output.direction_logits.astype(_F32), axis=-1)
    ce = mean(-jnp.take_along_axis(log_probs, safe_direction[..., None], axis=-1)[..., 0])
    low, high = output.quantiles[..., 0], output.quantiles[..., 1]
    pinball_10 = mean(_pinball(y, low, QUANTILE_LEVELS[0]))
    pinball_90 = mean(_pinball(y, high, QUANTILE_LEVELS[1]))
    vol_mse = mean((output.vol - v) ** 2)
    regression = pinball_10 + pinball_90 + vol_mse
    loss = uncertainty_weighted(ce, regression, log_vars)
    accuracy = mean((jnp.argmax(log_probs, axis=-1) == safe_direction).astype(_F32))
    parts = {
        "ce": ce,
        "pinball_10": pinball_10,
        "pinball_90": pinball_90,
        "vol_mse": vol_mse,
        "accuracy": accuracy,
        "weight_dir": jnp.exp(-log_vars[0]),
        "weight_reg": 0.5 * jnp.exp(-log_vars[1]),
    }
    return loss, parts
