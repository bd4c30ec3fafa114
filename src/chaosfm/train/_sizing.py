"""Sized configs: from a parameter budget to a model shape, a token budget, a batch, a learning
rate, and estimates of the FLOPs, memory and time the run will take.

Rules, each a pure function so it can be read and tested on its own:

* tokens: ``D = 20 N`` when not given, the compute-optimal ratio of Hoffmann et al. 2022
  ("Chinchilla", Table 3 / §3: about 20 tokens per parameter);
* shape: for every depth ``L`` and every width ``d`` on the width quantum (64, or 128 on TPUs),
  the closed-form parameter count; among the shapes within 10% of the budget, the one whose aspect
  ratio ``d / L`` is closest to 64 for a GPT (nanochat's ``model_dim = 64 * depth``) or 32 for a
  Mamba (Gu & Dao 2023's released mamba-130m, 768 x 24, and mamba-790m, 1536 x 48); head dim 128 from
  ``d >= 1024`` (when ``d`` allows it), 64 below;
* context: the largest power of two in [64, 2048] at most ``1.5 d``, so that the attention term
  ``12 L s d`` of the FLOPs stays within a quarter of ``6 N ~ 72 L d^2`` per token;
* batch: ``B = 0.292 C^0.3271`` tokens per step at ``C = 6 N D`` FLOPs (DeepSeek-AI 2024,
  "DeepSeek LLM", §3.1 eq. 1), rounded to ``devices * 2^k`` windows of the context;
* learning rate: ``3e-3 * 128 / d``, the µP rule for Adam's hidden weights, ``lr ∝ 1/fan_in``
  (Yang et al. 2022, "Tensor Programs V", Table 3), anchored at :class:`TrainConfig`'s default
  rate for the tiny presets' width 128. The loop has one rate for every weight, so this is the
  width scaling of µP, not all of it. It gives 5.0e-4 at d = 768 and 1.9e-4 at d = 2048, beside
  GPT-3's tuned 6.0e-4 and 2.0e-4 at those widths (Brown et al. 2020, Table 2.1);
* warm-up: 2% of the steps (at least one).

Estimates (``N`` parameters, ``D`` tokens, ``L`` layers, ``d`` width, ``s`` context, ``a`` heads,
``V`` vocabulary, ``b`` windows per device, ``p`` bytes per activation element):

* training FLOPs ``6 N D`` (Kaplan et al. 2020, §2.1 / Table 1) plus attention
  ``12 L s d`` per token (Hoffmann et al. 2022, Appendix F: ``2 s d`` for the scores and ``2 s d``
  for the weighted values per layer forward, three times that to train); the attention here scores
  every pair of the window, so ``s`` is the full context. A Mamba adds the SSD term
  ``3 (2 Q N_s H + 2 Q I + 4 I N_s)`` per layer and token (chunk ``Q``, state ``N_s``, inner width
  ``I``, heads ``H``: the intra-chunk scores and outputs, the chunk states and their read-out of
  Dao & Gu 2024, §6);
* memory per device: parameters 4N, gradients 4N, AdamW's two moments 8N bytes (float32; divided
  by the devices when sharded FSDP-style, replicated in plain data parallelism); activations of a
  GPT layer ``p s b (16 d + a s)`` bytes, Korthikanti et al. 2022 §4.1 eq. 1 (``34 s b d + 5 a s^2 b``
  at p = 2) without its dropout terms, plus ``4 s b V + 2 p s b d`` for the float32 logits and the
  head's input; with full rematerialisation of every layer (Chen et al. 2016) only each layer's
  input ``p s b d`` is kept, plus one layer's activations while it is recomputed. A Mamba-2 layer
  keeps ``p s b (d + 7 I + 6 N_s + H + 2 H Q + I N_s / Q)`` bytes: the tensors its mixer keeps for
  the backward pass;
* time: FLOPs / (devices * peak * MFU), peak bf16 FLOP/s from the vendors' public figures
  (:data:`DEVICE_KINDS`); for ``cpu`` the peak is measured on this machine
  (:func:`measure_matmul_peak`).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm._config import ConfigError
from chaosfm.models import build_model
from chaosfm.train._config import parse_train_run_config

__all__ = [
    "DEVICE_KINDS",
    "SIZE_PRESETS",
    "TOKENS_PER_PARAM",
    "TPU_KINDS",
    "DeviceKind",
    "MemoryEstimate",
    "SizingPlan",
    "abstract_param_count",
    "batch_tokens_for",
    "chinchilla_tokens",
    "choose_shape",
    "context_length_for",
    "gpt_param_formula",
    "learning_rate_for",
    "mamba_param_formula",
    "measure_matmul_peak",
    "memory_estimate",
    "parse_count",
    "plan_size",
    "training_flops",
    "warmup_steps_for",
]

TOKENS_PER_PARAM = 20
"""Compute-optimal tokens per parameter (Hoffmann et al. 2022)."""

SIZE_PRESETS: dict[str, int] = {"S": 125_000_000, "M": 350_000_000, "L": 760_000_000, "XL": 1_300_000_000}
"""T-shirt sizes: parameter budgets named after GPT-3's Small/Medium/Large/XL (Brown et al. 2020,
Table 2.1). The shape chosen for a budget lands within 10% of it; the exact count is reported."""


@dataclass(frozen=True)
class DeviceKind:
    """One accelerator: its dense bf16 peak and memory, and where the figures come from."""

    name: str
    peak_flops: float | None  # FLOP/s, dense bf16; None: measured (cpu)
    memory_bytes: float | None  # per device; None: this machine's RAM
    source: str
    tpu: bool = False


DEVICE_KINDS: dict[str, DeviceKind] = {
    "v4": DeviceKind("v4", 275e12, 32e9, "Google Cloud TPU v4 documentation", tpu=True),
    "v5e": DeviceKind("v5e", 197e12, 16e9, "Google Cloud TPU v5e documentation", tpu=True),
    "v5p": DeviceKind("v5p", 459e12, 95e9, "Google Cloud TPU v5p documentation", tpu=True),
    "h100": DeviceKind("h100", 989e12, 80e9, "NVIDIA H100 SXM datasheet (dense; 1979 with sparsity)"),
    "a100": DeviceKind("a100", 312e12, 80e9, "NVIDIA A100 datasheet (dense; 624 with sparsity), 80 GB model"),
    "cpu": DeviceKind("cpu", None, None, "measured: best of jitted float32 matmuls on this machine"),
}
"""Device kinds by name (``--device-kind``)."""

TPU_KINDS = tuple(name for name, kind in DEVICE_KINDS.items() if kind.tpu)

_ASPECT = {"gpt": 64.0, "mamba": 32.0}  # d_model / n_layers aimed at (see the module docstring)
_TOLERANCE = 1.10  # shapes within this factor of the budget compete on aspect ratio
_MAX_WIDTH, _MAX_DEPTH = 16384, 256
_MAMBA_STATE, _MAMBA_HEAD_DIM = 128, 64  # Mamba-2's released defaults: state 128, head dim 64
_BASE_LR, _BASE_WIDTH = 3e-3, 128
_WARMUP_FRACTION = 0.02
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(value: Any, name: str = "count") -> int:
    """A positive count from ``150M``, ``1.3B``, ``3e9`` or an int (suffixes K, M, B or G, T).

    Raises:
        ConfigError: naming ``name``, the value and the rule.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not a count")
    if isinstance(value, (int, np.integer)):
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]?)\s*", value)
        if match is None or match.group(2).upper() not in _SUFFIXES:
            raise ConfigError(
                f"{name}: {value!r} is not a count; write a number with an optional suffix K, M, B, T "
                "(e.g. 150M, 1.3B, 3e9)"
            )
        number = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    else:
        raise ConfigError(f"{name}: {value!r} is not a count")
    if not math.isfinite(number) or number < 1:
        raise ConfigError(f"{name}: {value!r} must be a positive count (>= 1)")
    return int(round(number))


def chinchilla_tokens(params: int) -> int:
    """Compute-optimal training tokens for ``params`` parameters: ``20 N`` (Hoffmann et al. 2022)."""
    return TOKENS_PER_PARAM * int(params)


def gpt_param_formula(d_model: int, n_layers: int, vocab_size: int, *, mlp_ratio: int = 4) -> int:
    """Parameters of a :class:`~chaosfm.models.GPT` with as many key/value heads as query heads:
    ``2 V d`` (embedding, untied head) ``+ L (4 d^2 + 2 mlp_ratio d^2)`` (Q, K, V, O; MLP in, out).
    No biases, no norm weights."""
    return 2 * vocab_size * d_model + n_layers * (4 + 2 * mlp_ratio) * d_model * d_model


def mamba_param_formula(
    d_model: int, n_layers: int, vocab_size: int, *, d_state: int = _MAMBA_STATE, head_dim: int = _MAMBA_HEAD_DIM,
    expand: int = 2, d_conv: int = 4,
) -> int:
    """Parameters of a plain :class:`~chaosfm.models.Mamba` (no attention layers, no Mamba-3 options):
    ``2 V d + L (d (2 I + 2 N + H) + d_conv (I + 2 N) + 3 H + I d)`` with ``I = expand d`` and
    ``H = I / head_dim`` (in-projection, conv, dt bias, A, skip, out-projection)."""
    inner = expand * d_model
    heads = inner // head_dim
    layer = d_model * (2 * inner + 2 * d_state + heads) + d_conv * (inner + 2 * d_state) + 3 * heads + inner * d_model
    return 2 * vocab_size * d_model + n_layers * layer


def _head_dim(d_model: int) -> int:
    return 128 if d_model >= 1024 and d_model % 128 == 0 else 64


def choose_shape(kind: str, params: int, vocab_size: int, *, tpu: bool = False) -> dict[str, int]:
    """Width, depth and heads for a ``kind`` model of about ``params`` parameters.

    Widths are multiples of 128 on TPUs (the MXU tile), else of 64 (the smallest head dim); among
    the shapes within 10% of ``params`` the aspect ratio ``d / L`` closest to the kind's target
    wins, else the shape closest to ``params``.

    Returns:
        The shape fields of the ``model:`` section (``d_model``, ``n_layers`` and ``n_heads``,
        ``n_kv_heads``, ``mlp_ratio`` or ``d_state``, ``head_dim``, ``expand``).
    """
    if kind not in _ASPECT:
        raise ConfigError(f"model: {kind!r} is not a model kind; allowed: {', '.join(_ASPECT)}")
    quantum = 128 if tpu else 64
    best: tuple[float, float, int, int] | None = None
    for depth in range(1, _MAX_DEPTH + 1):
        for width in range(quantum, _MAX_WIDTH + 1, quantum):
            count = (gpt_param_formula if kind == "gpt" else mamba_param_formula)(width, depth, vocab_size)
            miss = abs(math.log(count / params))
            aspect = abs(math.log(width / depth / _ASPECT[kind]))
            score = (0.0, aspect) if miss <= math.log(_TOLERANCE) else (1.0, miss)
            if best is None or score < best[:2]:
                best = (*score, width, depth)
            if count > params * _TOLERANCE:
                break
    _, _, width, depth = best
    if kind == "gpt":
        head_dim = _head_dim(width)
        return {"d_model": width, "n_layers": depth, "n_heads": width // head_dim, "n_kv_heads": width // head_dim,
                "mlp_ratio": 4}
    return {"d_model": width, "n_layers": depth, "d_state": _MAMBA_STATE, "head_dim": _MAMBA_HEAD_DIM, "expand": 2}


def context_length_for(d_model: int) -> int:
    """The largest power of two in [64, 2048] at most ``1.5 d_model`` (attention within a quarter
    of the ``6 N`` FLOPs per token)."""
    length = 64
    while length * 2 <= min(2048, 1.5 * d_model):
        length *= 2
    return length


def batch_tokens_for(flops: float) -> float:
    """Tokens per step ``0.292 C^0.3271`` at ``C`` training FLOPs (DeepSeek-AI 2024, §3.1 eq. 1)."""
    return 0.292 * float(flops) ** 0.3271


def learning_rate_for(d_model: int) -> float:
    """Peak AdamW rate ``3e-3 * 128 / d_model``: µP's ``1/fan_in`` for hidden weights (Yang et al. 2022)."""
    return _BASE_LR * _BASE_WIDTH / d_model


def warmup_steps_for(steps: int) -> int:
    """Linear warm-up over 2% of ``steps`` (at least one step)."""
    return max(1, round(_WARMUP_FRACTION * steps))


class _ShapeOnlyDraws(np.random.Generator):
    """A generator whose normal draws are traced zeros: under ``jax.eval_shape`` a model's
    constructor then builds abstract arrays and draws no weights. Other draws (a few per head:
    step sizes, decay rates) stay real."""

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return jnp.zeros(() if size is None else size, jnp.float32)


def abstract_param_count(model_config: Any) -> int:
    """Trainable scalars of the model ``model_config`` describes, built with ``jax.eval_shape``
    on the model's own class (no weights allocated): the count :func:`chaosfm.models.count_params`
    gives for the real model."""
    shapes = jax.eval_shape(lambda: build_model(model_config, key=_ShapeOnlyDraws(np.random.PCG64(0))))
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes)
                   if jnp.issubdtype(leaf.dtype, jnp.inexact)))


def training_flops(kind: str, model: dict[str, Any], params: int, tokens: float) -> dict[str, float]:
    """Training FLOPs: ``dense = 6 N D`` and the ``sequence`` term (attention or SSD), and their sum.

    Args:
        kind: ``gpt`` or ``mamba``.
        model: the ``model:`` section (``d_model``, ``n_layers``, ``context_length``, ...).
        params: N.
        tokens: D.
    """
    d, layers, s = model["d_model"], model["n_layers"], model["context_length"]
    if kind == "gpt":
        per_token = 12 * layers * s * d
    else:
        inner = model.get("expand", 2) * d
        heads, state, chunk = inner // model["head_dim"], model["d_state"], min(model.get("chunk_size", 64), s)
        per_token = 3 * layers * (2 * chunk * state * heads + 2 * chunk * inner + 4 * inner * state)
    dense = 6.0 * params * tokens
    sequence = float(per_token) * tokens
    return {"dense": dense, "sequence": sequence, "total": dense + sequence}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training step (see the module docstring for the formulas)."""

    params: float  # float32 weights, replicated
    gradients: float  # float32, replicated
    optimizer: float  # AdamW's two float32 moments, replicated
    activations: float  # everything kept for the backward pass, no rematerialisation
    activations_remat: float  # each layer's input, plus one layer recomputed at a time
    devices: int

    @property
    def states(self) -> float:
        """Parameters, gradients and optimizer state, replicated on each device (data parallel)."""
        return self.params + self.gradients + self.optimizer

    @property
    def states_sharded(self) -> float:
        """The same, sharded over the devices (FSDP / ZeRO-3)."""
        return self.states / self.devices

    def total(self, *, remat: bool, sharded: bool) -> float:
        return (self.states_sharded if sharded else self.states) + (
            self.activations_remat if remat else self.activations
        )


def _layer_elements_per_token(kind: str, model: dict[str, Any]) -> float:
    d, s = model["d_model"], model["context_length"]
    if kind == "gpt":
        return 16 * d + model["n_heads"] * s
    inner = model.get("expand", 2) * d
    heads, state, chunk = inner // model["head_dim"], model["d_state"], min(model.get("chunk_size", 64), s)
    return d + 7 * inner + 6 * state + heads + 2 * heads * chunk + inner * state / chunk


def memory_estimate(
    kind: str, model: dict[str, Any], params: int, *, batch_size: int, devices: int = 1
) -> MemoryEstimate:
    """Bytes per device for ``params`` float32 parameters under AdamW and the activations of
    ``batch_size / devices`` windows of the ``model:`` section's context (activations in its ``dtype``).
    """
    p = 4 if model.get("dtype", "float32") == "float32" else 2
    d, layers, s, vocab = model["d_model"], model["n_layers"], model["context_length"], model["vocab_size"]
    windows = batch_size / devices
    layer = p * s * windows * _layer_elements_per_token(kind, model)
    outside = 4 * s * windows * vocab + 2 * p * s * windows * d
    return MemoryEstimate(
        params=4.0 * params,
        gradients=4.0 * params,
        optimizer=8.0 * params,
        activations=layers * layer + outside,
        activations_remat=layers * p * s * windows * d + layer + outside,
        devices=devices,
    )


def measure_matmul_peak(size: int = 1024, repeats: int = 10) -> float:
    """This machine's float32 matmul FLOP/s: the best of ``repeats`` jitted ``size x size`` products."""
    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    product(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        product(a, a).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def _machine_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class SizingPlan:
    """A sized model + training run and what it will cost.

    ``model`` and ``train`` are the sections of a ``chaosfm train`` config file.
    """

    kind: str
    target_params: int
    params: int  # exact, from the model built abstractly
    tokens: int  # D asked for (20 N by default)
    trained_tokens: int  # steps * batch tokens (D rounded up to whole steps)
    batch_tokens: int
    steps: int
    model: dict[str, Any]
    train: dict[str, Any]
    flops: dict[str, float]
    memory: MemoryEstimate
    device_kind: str
    devices: int
    peak_flops: float  # per device, FLOP/s
    peak_source: str
    device_memory: float | None  # bytes per device
    mfu: float

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the whole run at ``mfu`` of the devices' peak."""
        return self.flops["total"] / (self.devices * self.peak_flops * self.mfu)


def plan_size(
    kind: str,
    params: int,
    vocab_size: int,
    *,
    tokens: int | None = None,
    device_kind: str = "cpu",
    devices: int = 1,
    context_length: int | None = None,
    mfu: float = 0.4,
    peak_flops: float | None = None,
    seed: int = 0,
) -> SizingPlan:
    """The plan of a ``kind`` model of about ``params`` parameters trained on ``tokens`` tokens.

    Args:
        kind: ``gpt`` or ``mamba``.
        params: the parameter budget N.
        vocab_size: the tokenizer's codebook size V.
        tokens: D; ``20 N`` (of the exact N) when None.
        device_kind: a key of :data:`DEVICE_KINDS`.
        devices: data-parallel devices.
        context_length: codes per window; :func:`context_length_for` when None.
        mfu: model FLOPs utilisation assumed for the time estimate, in (0, 1].
        peak_flops: per-device peak FLOP/s; required for ``cpu`` (measure it with
            :func:`measure_matmul_peak`), else the public figure of :data:`DEVICE_KINDS`.
        seed: the run's seed, written into the train section.

    Raises:
        ConfigError: naming the bad argument.
    """
    if device_kind not in DEVICE_KINDS:
        raise ConfigError(f"device_kind: {device_kind!r} is not a device kind; known: {', '.join(DEVICE_KINDS)}")
    device = DEVICE_KINDS[device_kind]
    for name, value in (("params", params), ("devices", devices), ("vocab_size", vocab_size)):
        if value < 1:
            raise ConfigError(f"{name}: {value} must be positive")
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu: {mfu} must be in (0, 1]")
    peak = peak_flops if peak_flops is not None else device.peak_flops
    if peak is None or peak <= 0:
        raise ConfigError(f"device_kind: {device_kind!r} has no public peak; measure it (measure_matmul_peak)")
    shape = choose_shape(kind, params, vocab_size, tpu=device.tpu)
    context = context_length if context_length is not None else context_length_for(shape["d_model"])
    if context < 2:
        raise ConfigError(f"context_length: {context} must be at least 2")
    model = {"kind": kind, "vocab_size": vocab_size, "context_length": context, **shape,
             "dtype": "float32" if device_kind == "cpu" else "bfloat16"}
    # The same validation and preset merge `chaosfm train` runs, so the count is of the model it builds.
    model_config = parse_train_run_config({"model": model}, "sized config").model.to_model_config()
    exact = abstract_param_count(model_config)
    tokens = chinchilla_tokens(exact) if tokens is None else int(tokens)
    if tokens < 1:
        raise ConfigError(f"tokens: {tokens} must be positive")
    windows = batch_tokens_for(6.0 * exact * tokens) / (context * devices)
    batch_size = devices * 2 ** max(0, round(math.log2(max(windows, 1.0))))
    batch_tokens = batch_size * context
    steps = max(1, math.ceil(tokens / batch_tokens))
    train = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": float(f"{learning_rate_for(shape['d_model']):.3g}"),
        "warmup_steps": warmup_steps_for(steps),
        "weight_decay": 0.1,
        "checkpoint_every": min(1000, max(1, steps // 10)),
        "log_every": min(100, max(1, steps // 100)),
        "seed": seed,
        **({"devices": devices} if devices > 1 else {}),
    }
    parse_train_run_config({"model": model, "train": train}, "sized config")
    trained = steps * batch_tokens
    return SizingPlan(
        kind=kind,
        target_params=int(params),
        params=exact,
        tokens=tokens,
        trained_tokens=trained,
        batch_tokens=batch_tokens,
        steps=steps,
        model=model,
        train=train,
        flops=training_flops(kind, model, exact, trained),
        memory=memory_estimate(kind, model, exact, batch_size=batch_size, devices=devices),
        device_kind=device_kind,
        devices=devices,
        peak_flops=float(peak),
        peak_source=device.source,
        device_memory=device.memory_bytes if device.memory_bytes is not None else _machine_memory(),
        mfu=mfu,
    )
