"""A joint-embedding predictive world model over candles: Mamba-2 encoders, VICReg, and a CFM head.

* **Context encoder.** Each candle is a token, read one of two ways. With ``vocab_size > 0`` it is
  the code a candle tokenizer (FSQ or VQ-VAE, one code per candle) gave it, looked up in an
  embedding table of ``vocab_size + 1`` rows (the last row stands for a hidden step). With
  ``vocab_size = 0`` it is its causal features (``chaosfm.data.candle_features``, standardised
  with training-row statistics), with ``window_norm`` standardised again by the window's own
  running mean and std up to that step (:func:`causal_window_norm`; with ``window_scale`` each
  feature's running log-std joins them, so the volatility level survives) and projected to
  ``d_model``. Either way the tokens are read by the layer stack of the code models
  (:func:`chaosfm.models.mamba_layers`: Mamba mixers with pre-norm residuals, a GPT block every
  ``attention_every``-th layer), with every option of theirs: Mamba-3's ``trapezoidal`` rule,
  ``complex_phase`` and ``bc_norm``, and two clocks on the step size. ``exo_clock`` stretches it
  by the standardised realized volatility (feature column ``exo_column``); with a ``session``
  (:func:`chaosfm.data.session_clock`) each step's size is multiplied by the market time since
  the bar before, read from the rows' timestamps, which the inputs carry as one extra last
  column: 0 inside a closure, so the state passes a weekend or holiday row without decay. With ``depth_attention`` each layer reads a softmax mix of the outputs
  of every earlier layer instead of their plain sum ("attention residuals across depth": a
  learned query per layer scores each earlier output). A linear map to ``d_embed`` and an L2
  normalisation put embeddings on the unit sphere.
* **Target encoder.** The same architecture, an exponential moving average of the context encoder
  (:func:`chaosfm.models.ema_update`), never trained by gradients.
* **Masks.** A window is cut at a random step: the context encoder sees only the steps before the
  cut (the rest are zeroed, or set to the hidden code, and the encoder is causal anyway); target
  blocks lie after it.
* **Predictor.** Asymmetric: it works at width ``d_pred < d_model``, projecting the embeddings in
  and its output back out, and predicts the target encoder's embedding at every hidden step. One
  of :data:`PREDICTORS` (``predictor`` in the config): ``"transformer"`` (the default), a small
  causal transformer reading the context tokens and a learned mask token at every hidden step;
  ``"mlp"`` and ``"kan"`` (:class:`StepwisePredictor`), which read at each step the last visible
  context embedding and a learned embedding of how many steps ago it was, through residual
  blocks of a squared-ReLU MLP or of a Kolmogorov–Arnold layer (:class:`chaosfm.models.KANLayer`).
* **Loss.** VICReg: invariance between predictions and targets on the target blocks, the variance
  hinge on the context embeddings and on the predictions, covariance on the context embeddings
  (with ``window_terms`` both also across the batch on one embedding per window, its last visible
  step; all float32), plus ``cfm_weight * invariance_weight`` times the flow-matching loss of
  :class:`VelocityField`, which learns the target embedding ``cfm_horizon`` steps after the cut
  given the context embedding just before it (so ``cfm_weight = 1`` weighs the flow like the
  invariance term). ``cfm_weight = 0`` builds no flow head at all. Two more terms are off by
  default: ``barlow_weight`` times Barlow Twins between predictions and targets on the target
  steps, and ``cross_resolution_weight`` times the consistency of the pooled context embedding of
  the window downsampled by two with the pooled target embedding of the full window
  (:mod:`chaosfm.models._ssl_losses` has both formulas).

Dimension letters: T or L time (window), F features per candle (absent for codes: ``(T,)``), D model width, E embedding width,
P predictor width, B batch, S samples.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm.models._base import init_rng, normal_init, rms_norm
from chaosfm.models._cfm import VelocityField, sample_flow
from chaosfm.models._gpt import MLP, Attention, Block
from chaosfm.models._kan import KAN_BASES, KANLayer
from chaosfm.data import parse_session
from chaosfm.models._mamba import Mamba2Mixer, MambaBlock, MambaConfig, apply_layer, mamba_layers

__all__ = [
    "PREDICTORS",
    "AbstractJEPAPredictor",
    "PredictorKind",
    "JEPA",
    "JEPAConfig",
    "JEPAEncoder",
    "JEPAPredictor",
    "StepwisePredictor",
    "causal_window_norm",
    "l2_normalize",
]

_F32 = jnp.float32


def l2_normalize(x: Float[Array, "... dim"], eps: float = 1e-6) -> Float[Array, "... dim"]:
    """Project onto the unit sphere (float32)."""
    x = x.astype(_F32)
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def causal_window_norm(
    x: Float[Array, "time features"], eps: float = 1e-2
) -> tuple[Float[Array, "time features"], Float[Array, "time features"]]:
    """Standardise each step by the window's own statistics up to that step (float32).

    Step ``t`` uses the mean and (biased) variance of rows ``0..t`` of the window, so the result
    at ``t`` never depends on a later row: the encoder stays causal, and rows the mask hides
    (after the cut) cannot reach a visible step. An affine change ``a * x + b`` (``a > 0``, per
    feature) of the window leaves the standardised rows unchanged up to ``eps``.

    Returns:
        ``(normalised, log_scale)``: ``(x - mean_t) / sqrt(var_t + eps)`` and
        ``0.5 * log(var_t + eps)``, each ``(T, F)``.
    """
    x = x.astype(_F32)
    count = jnp.arange(1, x.shape[0] + 1, dtype=_F32)[:, None]
    mean = jnp.cumsum(x, axis=0) / count
    # Centre on the window's first row before the running sums: keeps float32 cancellation small.
    shifted = x - x[:1]
    var = jnp.maximum(jnp.cumsum(shifted * shifted, axis=0) / count - (mean - x[:1]) ** 2, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + eps), 0.5 * jnp.log(var + eps)


@dataclass(frozen=True)
class JEPAConfig:
    """Everything that fixes a JEPA's shapes and losses; saved beside the weights."""

    n_features: int = 7  # inputs per candle (standardised candle features)
    # > 0: each candle is instead one code of a candle tokenizer with this vocabulary (the encoder
    # embeds it, and window_norm / window_scale / n_features do not apply); 0: features.
    vocab_size: int = 0
    # Per-window causal standardisation of the inputs (causal_window_norm): the scaler is fitted on
    # the training years, so a calmer or wilder later period otherwise reaches the encoder
    # squeezed or stretched, and its embeddings lose spread (measured: the held-out collapse check).
    window_norm: bool = True
    window_scale: bool = True  # with window_norm: also feed each feature's window log-std (keeps the level)
    context_length: int = 64  # window L the masks cut
    d_model: int = 32  # encoder width
    n_layers: int = 2  # Mamba-2 mixers in each encoder
    d_state: int = 16  # SSM state per head
    head_dim: int = 16  # heads = 2 * d_model / head_dim
    depth_attention: bool = False  # attention residuals across depth
    d_embed: int = 32  # embedding width on the unit sphere
    d_pred: int = 16  # predictor width; smaller than d_model (the asymmetric predictor)
    predictor: str = "transformer"  # a key of PREDICTORS: "transformer", "mlp" or "kan"
    pred_layers: int = 1  # predictor blocks (transformer blocks, MLPs or KAN layers)
    pred_heads: int = 2  # predictor attention heads (transformer only)
    kan_basis: str = "bspline"  # KAN edges: "bspline" (+ SiLU base, Liu et al. 2024) or "rbf" (FastKAN)
    kan_grid: int = 5  # KAN grid intervals on [-kan_radius, kan_radius]
    kan_order: int = 3  # KAN B-spline order (cubic, the paper's choice)
    kan_radius: float = 2.0  # KAN grid half-width: the blocks read RMS-normalised activations
    n_blocks: int = 2  # target blocks per window
    min_span: int = 4  # target block lengths, inclusive
    max_span: int = 12
    min_future: int = 8  # hidden future after the cut, inclusive
    max_future: int = 20
    ema_decay: float = 0.99  # target encoder = EMA of the context encoder
    invariance_weight: float = 25.0  # VICReg's lambda
    variance_weight: float = 25.0  # VICReg's mu
    covariance_weight: float = 1.0  # VICReg's nu
    variance_target: float = 0.5  # hinge on per-dim std at this fraction of 1/sqrt(d_embed)
    # Also apply the variance and covariance terms across the batch to one embedding per window
    # (the last visible step), the statistic the held-out collapse check measures: a hinge on B
    # windows is noisier than on B * L steps, so it holds the weakest dimension further above the
    # target (with window_norm alone, jepa-tiny seed 0 still ended one held-out dimension below).
    window_terms: bool = True
    # Barlow Twins between predictions and targets on the target steps; 0 skips the term.
    barlow_weight: float = 0.0
    barlow_lambda: float = 5e-3  # Barlow Twins' off-diagonal weight (the paper's lambda)
    # Pooled context embedding of the window downsampled by 2 vs pooled target embedding of the
    # full window (features only); 0 skips the term and its extra encoder pass.
    cross_resolution_weight: float = 0.0
    cfm_weight: float = 0.0  # share of the flow-matching loss; 0 builds no flow head
    cfm_horizon: int = 5  # the flow learns the target embedding this many steps after the cut
    cfm_hidden: int = 64  # velocity MLP width
    cfm_noise: float = 0.0  # std of the flow's source noise; 0 means 1/sqrt(d_embed)
    cfm_steps: int = 8  # Heun steps when sampling
    cfm_epsilon: float = 0.05  # Sinkhorn regularisation, relative to the mean squared distance
    # The encoder's sequence-model options (features and codes alike unless said):
    trapezoidal: bool = False  # Mamba-3 trapezoidal discretisation
    complex_phase: bool = False  # Mamba-3 rotating state
    bc_norm: bool = False  # Mamba-3 BC normalisation
    gated_mlp: bool = False  # a SwiGLU MLP after every mixer, in its own residual
    attention_every: int = 0  # N > 0: every N-th encoder layer is a sliding-window attention block
    attention_heads: int = 2
    attention_kv_heads: int = 1
    exo_clock: bool = False  # features only: dt stretched by the realized volatility ...
    exo_column: int = -1  # ... read from this standardised feature column (set by `chaosfm pretrain`)
    # Features only: "" (off), "24/7", "weekdays" or "weekdays HH:MM-HH:MM" (UTC): dt scaled by the
    # market time since the previous bar, 0 inside closures (chaosfm.data.session_clock).
    session: str = ""
    clock_unit: float = 0.0  # seconds of market time per bar, measured on the training rows

    def __post_init__(self) -> None:
        problems = []
        if self.vocab_size > 0 and (self.exo_clock or self.session):
            problems.append(("exo_clock", "and session need feature inputs (vocab_size 0): codes carry no "
                                          "volatility or timestamps"))
        if self.exo_clock and not 0 <= self.exo_column < self.n_features:
            problems.append(("exo_column", f"must name one of the {self.n_features} feature columns for exo_clock"))
        if self.session:
            try:
                parse_session(self.session)
            except ValueError as error:
                problems.append(("session", str(error).removeprefix("session: ")))
        if self.clock_unit < 0:
            problems.append(("clock_unit", "must be >= 0 (0: measured on the training rows)"))
        try:
            self.mamba_config()
        except ValueError as error:
            problems.extend(tuple(p.split(": ", 1)) for p in str(error).split("; "))
        if self.vocab_size < 0:
            problems.append(("vocab_size", "must be >= 0 (0: the encoder reads features, not codes)"))
        if self.d_pred >= self.d_model:
            problems.append(("d_pred", f"must be smaller than d_model ({self.d_model}): the predictor is asymmetric"))
        if (2 * self.d_model) % self.head_dim:
            problems.append(("head_dim", f"must divide 2 * d_model = {2 * self.d_model}"))
        if self.predictor not in PREDICTORS:
            problems.append(("predictor", f"unknown {self.predictor!r}; known: {', '.join(sorted(PREDICTORS))}"))
        else:
            problems.extend(PREDICTORS[self.predictor].problems(self))
        if self.pred_layers < 1:
            problems.append(("pred_layers", "must be >= 1"))
        if self.kan_basis not in KAN_BASES:
            problems.append(("kan_basis", f"unknown {self.kan_basis!r}; known: {', '.join(sorted(KAN_BASES))}"))
        if self.kan_grid < 1:
            problems.append(("kan_grid", "must be >= 1 (grid intervals)"))
        if self.kan_order < 0:
            problems.append(("kan_order", "must be >= 0"))
        if not self.kan_radius > 0:
            problems.append(("kan_radius", "must be > 0"))
        if self.barlow_weight < 0:
            problems.append(("barlow_weight", "must be >= 0 (0 turns Barlow Twins off)"))
        if self.barlow_lambda < 0:
            problems.append(("barlow_lambda", "must be >= 0"))
        if self.cross_resolution_weight < 0:
            problems.append(("cross_resolution_weight", "must be >= 0 (0 turns the term off)"))
        if self.cross_resolution_weight > 0 and self.vocab_size > 0:
            problems.append(
                ("cross_resolution_weight", "must be 0 with vocab_size > 0: codes cannot be averaged in time")
            )
        if not 0 < self.ema_decay < 1:
            problems.append(("ema_decay", "must lie in (0, 1)"))
        if not self.min_future <= self.max_future < self.context_length:
            problems.append(("max_future", "need min_future <= max_future < context_length"))
        if self.cfm_weight < 0:
            problems.append(("cfm_weight", "must be >= 0 (0 turns the flow head off)"))
        if self.cfm_weight > 0 and self.cfm_horizon > self.min_future:
            problems.append(("cfm_horizon", f"must be <= min_future ({self.min_future})"))
        if problems:
            raise ValueError("; ".join(f"{key}: {rule}" for key, rule in problems))

    @property
    def reads_codes(self) -> bool:
        return self.vocab_size > 0

    @property
    def variance_std(self) -> float:
        """The VICReg hinge target on each dimension's standard deviation."""
        return self.variance_target / math.sqrt(self.d_embed)

    @property
    def noise_scale(self) -> float:
        return self.cfm_noise or 1.0 / math.sqrt(self.d_embed)

    @property
    def input_width(self) -> int:
        """Columns of a features window: the features, and the session clock last when ``session``."""
        return self.n_features + (1 if self.session else 0)

    def mamba_config(self) -> MambaConfig:
        return MambaConfig(
            vocab_size=2,
            context_length=self.context_length,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=self.d_state,
            head_dim=self.head_dim,
            chunk_size=min(64, self.context_length),
            attention_every=self.attention_every,
            attention_heads=self.attention_heads,
            attention_kv_heads=self.attention_kv_heads,
            exo_clock=self.exo_clock,
            trapezoidal=self.trapezoidal,
            complex_phase=self.complex_phase,
            bc_norm=self.bc_norm,
            gated_mlp=self.gated_mlp,
        )

    def replace(self, **changes: Any) -> "JEPAConfig":
        return dataclasses.replace(self, **changes)


class JEPAEncoder(eqx.Module):
    """Candle features ``(T, F)`` or codes ``(T,)`` -> unit-sphere embeddings ``(T, E)``, causal in time."""

    w_in: Float[Array, "inputs d_model"] | None
    embedding: Float[Array, "codes d_model"] | None  # vocab_size + 1 rows; the last is the hidden step
    layers: tuple[Mamba2Mixer | MambaBlock | Block, ...]
    depth_queries: Float[Array, "layers d_model"] | None
    w_out: Float[Array, "d_model d_embed"]
    window_norm: bool = eqx.field(static=True)
    window_scale: bool = eqx.field(static=True)
    exo_column: int | None = eqx.field(static=True)  # the exo_clock's feature column
    clocked: bool = eqx.field(static=True)  # the inputs' last column is the session clock

    def __init__(self, config: JEPAConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        mamba = config.mamba_config()
        if config.reads_codes:
            self.w_in = None
            self.embedding = normal_init(rng, (config.vocab_size + 1, config.d_model), 1.0)
        else:
            inputs = config.n_features * (2 if config.window_norm and config.window_scale else 1)
            self.w_in = normal_init(rng, (inputs, config.d_model), inputs**-0.5)
            self.embedding = None
        self.window_norm, self.window_scale = config.window_norm, config.window_scale
        self.exo_column = config.exo_column if config.exo_clock else None
        self.clocked = bool(config.session)
        self.layers = mamba_layers(mamba, rng)
        # Zero queries start as a uniform mix over depth.
        self.depth_queries = (
            jnp.zeros((config.n_layers + 1, config.d_model), _F32) if config.depth_attention else None
        )
        self.w_out = normal_init(rng, (config.d_model, config.d_embed), config.d_model**-0.5)

    def hidden(self, x: Float[Array, "time features"] | Int[Array, " time"]) -> Float[Array, "time d_model"]:
        """The last residual stream (before the output map), float32."""
        clock = exo = None
        if self.embedding is not None:
            h = self.embedding[x].astype(_F32)
        else:
            if self.clocked:
                x, clock = x[:, :-1], x[:, -1]
            if self.exo_column is not None:
                exo = x[:, self.exo_column]
            h = self.inputs(x) @ self.w_in
        outputs = [h]  # outputs of the embedding and of each layer, for depth attention
        for index, layer in enumerate(self.layers):
            x = h if self.depth_queries is None else self._depth_mix(outputs, index)
            if isinstance(layer, Mamba2Mixer):
                update, _ = layer(rms_norm(x), None, exo, clock=clock)
            else:  # an attention block, or a mixer with its gated MLP: both return the new stream
                out, _ = apply_layer(layer, x, None, exo, clock=clock)
                update = out - x
            outputs.append(update.astype(_F32))
            h = x + update.astype(_F32) if self.depth_queries is None else update.astype(_F32)
        if self.depth_queries is not None:
            h = self._depth_mix(outputs, len(self.layers))
        return rms_norm(h)

    def hide(
        self, x: Float[Array, "time features"] | Int[Array, " time"], visible: Bool[Array, " time"]
    ) -> Float[Array, "time features"] | Int[Array, " time"]:
        """``x`` with the steps not ``visible`` replaced: zero features, or the hidden code."""
        if self.embedding is not None:
            return jnp.where(visible, x, self.embedding.shape[0] - 1)
        return x * visible[:, None].astype(x.dtype)

    def inputs(self, features: Float[Array, "time features"]) -> Float[Array, "time inputs"]:
        """What ``w_in`` reads: the features, or their causal window standardisation (+ log scale)."""
        x = features.astype(_F32)
        if not self.window_norm:
            return x
        normalised, log_scale = causal_window_norm(x)
        return jnp.concatenate([normalised, log_scale], axis=-1) if self.window_scale else normalised

    def _depth_mix(self, outputs: list[Array], index: int) -> Float[Array, "time d_model"]:
        stacked = jnp.stack(outputs)  # (depth, time, d_model)
        scores = jnp.einsum("d,ktd->kt", self.depth_queries[index], rms_norm(stacked))
        weights = jax.nn.softmax(scores, axis=0)
        return jnp.einsum("kt,ktd->td", weights, stacked)

    def __call__(self, x: Float[Array, "time features"] | Int[Array, " time"]) -> Float[Array, "time d_embed"]:
        return l2_normalize(self.hidden(x) @ self.w_out)


class AbstractJEPAPredictor(eqx.Module):
    """Context embeddings and which steps are visible -> predicted target embeddings, per window.

    A predictor must not read the context embedding of a step that is not visible, and its
    prediction at a step depends only on steps at or before it.
    """

    @abc.abstractmethod
    def __call__(
        self, context: Float[Array, "time d_embed"], visible: Bool[Array, " time"]
    ) -> Float[Array, "time d_embed"]:
        """Unit-sphere predictions of the target encoder's embedding at every step."""


class JEPAPredictor(AbstractJEPAPredictor):
    """Causal transformer of width ``d_pred``: context embeddings and mask tokens -> target embeddings."""

    w_in: Float[Array, "d_embed d_pred"]
    mask_token: Float[Array, " d_pred"]
    blocks: tuple[Block, ...]
    w_out: Float[Array, "d_pred d_embed"]

    def __init__(self, config: JEPAConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.w_in = normal_init(rng, (config.d_embed, config.d_pred), config.d_embed**-0.5)
        self.mask_token = normal_init(rng, (config.d_pred,), 0.02)
        heads = config.pred_heads
        self.blocks = tuple(
            Block(
                Attention(config.d_pred, heads, heads, config.context_length, key=rng),
                MLP(config.d_pred, 4 * config.d_pred, key=rng),
            )
            for _ in range(config.pred_layers)
        )
        self.w_out = normal_init(rng, (config.d_pred, config.d_embed), config.d_pred**-0.5)

    def __call__(
        self, context: Float[Array, "time d_embed"], visible: Bool[Array, " time"]
    ) -> Float[Array, "time d_embed"]:
        tokens = context.astype(_F32) @ self.w_in
        h = jnp.where(visible[:, None], tokens, self.mask_token[None, :])
        for block in self.blocks:
            h, _ = block(h, None)
        return l2_normalize(rms_norm(h) @ self.w_out)


class StepwisePredictor(AbstractJEPAPredictor):
    """Per-step predictor of width ``d_pred``: the last visible embedding and its age -> target embedding.

    At step ``t`` with ``s(t)`` the last visible step at or before ``t``, the input is
    ``h_t = W_in c_{s(t)} + A[t - s(t)]`` (``A`` a learned table of ages, ``t - s(t) = 0`` on visible
    steps), read by ``pred_layers`` pre-norm residual blocks ``h <- h + block(rms_norm(h))``
    applied to each step alone; the prediction is ``normalise(W_out rms_norm(h_t))``. Steps see
    no other step, so an MLP or a KAN block needs no attention: what a hidden step knows is the
    last thing seen and how long ago.
    """

    w_in: Float[Array, "d_embed d_pred"]
    age_embedding: Float[Array, "time d_pred"]
    blocks: tuple[eqx.Module, ...]
    w_out: Float[Array, "d_pred d_embed"]

    def __init__(
        self,
        config: JEPAConfig,
        block: Callable[[JEPAConfig, np.random.Generator], eqx.Module],
        *,
        key: PRNGKeyArray | np.random.Generator,
    ):
        """Args:
            config: the JEPA's config (``d_embed``, ``d_pred``, ``context_length``, ``pred_layers``).
            block: ``(config, rng) -> module`` mapping one step's ``(d_pred,)`` to ``(d_pred,)``.
            key: initialisation key (or a NumPy generator from a parent module).
        """
        rng = init_rng(key)
        self.w_in = normal_init(rng, (config.d_embed, config.d_pred), config.d_embed**-0.5)
        self.age_embedding = normal_init(rng, (config.context_length, config.d_pred), 0.02)
        self.blocks = tuple(block(config, rng) for _ in range(config.pred_layers))
        self.w_out = normal_init(rng, (config.d_pred, config.d_embed), config.d_pred**-0.5)

    def __call__(
        self, context: Float[Array, "time d_embed"], visible: Bool[Array, " time"]
    ) -> Float[Array, "time d_embed"]:
        length = context.shape[0]
        steps = jnp.arange(length)
        last_seen = jax.lax.cummax(jnp.where(visible, steps, -1))  # -1 before the first visible step
        seen = (last_seen >= 0)[:, None].astype(_F32)
        source = context.astype(_F32)[jnp.maximum(last_seen, 0)] * seen
        age = jnp.minimum(steps - last_seen, self.age_embedding.shape[0] - 1)
        h = source @ self.w_in + self.age_embedding[age]
        for block in self.blocks:
            h = h + jax.vmap(block)(rms_norm(h)).astype(_F32)
        return l2_normalize(rms_norm(h) @ self.w_out)


def _mlp_block(config: JEPAConfig, rng: np.random.Generator) -> eqx.Module:
    return MLP(config.d_pred, 4 * config.d_pred, key=rng)


def _kan_block(config: JEPAConfig, rng: np.random.Generator) -> eqx.Module:
    return KANLayer(
        config.d_pred,
        config.d_pred,
        basis=config.kan_basis,
        grid_size=config.kan_grid,
        order=config.kan_order,
        radius=config.kan_radius,
        key=rng,
    )


def _transformer_problems(config: JEPAConfig) -> list[tuple[str, str]]:
    if config.d_pred % config.pred_heads or (config.d_pred // config.pred_heads) % 2:
        return [("pred_heads", "must divide d_pred into an even head dim")]
    return []


def _no_problems(config: JEPAConfig) -> list[tuple[str, str]]:
    return []


class PredictorKind(NamedTuple):
    """One entry of :data:`PREDICTORS`."""

    build: Callable[..., AbstractJEPAPredictor]  # (config, *, key) -> predictor
    problems: Callable[[JEPAConfig], list[tuple[str, str]]]  # config rules of this kind: (key, rule)


PREDICTORS: dict[str, PredictorKind] = {
    "transformer": PredictorKind(JEPAPredictor, _transformer_problems),
    "mlp": PredictorKind(functools.partial(StepwisePredictor, block=_mlp_block), _no_problems),
    "kan": PredictorKind(functools.partial(StepwisePredictor, block=_kan_block), _no_problems),
}
"""``JEPAConfig.predictor`` -> how to build that predictor and the config rules it adds."""


class JEPA(eqx.Module):
    """Context encoder, EMA target encoder, predictor and (if ``cfm_weight > 0``) a flow head."""

    config: JEPAConfig = eqx.field(static=True)
    encoder: JEPAEncoder
    target_encoder: JEPAEncoder
    predictor: AbstractJEPAPredictor
    flow: VelocityField | None

    def __init__(self, config: JEPAConfig, *, key: PRNGKeyArray | np.random.Generator):
        rng = init_rng(key)
        self.config = config
        self.encoder = JEPAEncoder(config, key=rng)
        self.target_encoder = self.encoder  # starts equal; diverges only through the EMA
        self.predictor = PREDICTORS[config.predictor].build(config, key=rng)
        self.flow = (
            VelocityField(config.d_embed, config.d_embed, hidden=config.cfm_hidden, key=rng)
            if config.cfm_weight > 0
            else None
        )

    @property
    def kind(self) -> str:
        return "jepa_cfm" if self.flow is not None else "jepa"

    def embed(self, features: Float[Array, "time features"]) -> Float[Array, "time d_embed"]:
        """Context-encoder embeddings of every step (each sees only steps at or before it)."""
        return self.encoder(features)

    def embed_target(self, features: Float[Array, "time features"]) -> Float[Array, "time d_embed"]:
        """Target-encoder (EMA) embeddings of every step."""
        return self.target_encoder(features)

    def sample_future(
        self, context_embedding: Float[Array, " d_embed"], num_samples: int, *, key: PRNGKeyArray
    ) -> Float[Array, "samples d_embed"]:
        """``num_samples`` target embeddings ``cfm_horizon`` steps ahead, on the sphere."""
        if self.flow is None:
            raise ValueError("this JEPA has no flow head (cfm_weight = 0): it cannot sample futures")
        drawn = sample_flow(
            self.flow,
            context_embedding,
            num_samples,
            self.config.d_embed,
            key=key,
            noise_scale=self.config.noise_scale,
            steps=self.config.cfm_steps,
        )
        return l2_normalize(drawn)
