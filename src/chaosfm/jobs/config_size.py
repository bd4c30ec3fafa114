"""``chaosfm config size``: a model + train config sized for a parameter budget, and its costs.

From ``params`` (or a T-shirt ``size``), the model kind, the tokenizer and the devices,
:func:`chaosfm.train.plan_size` chooses the shape, context, token budget, batch, steps, learning
rate and warm-up, and estimates FLOPs, memory per device and time. :func:`run` writes the four
sections ``chaosfm train --config`` reads (``data``, ``tokenizer``, ``model``, ``train``) to
``out`` after validating them through that command's own config (:class:`TrainRunFile`), and
returns the plan with a table of the estimates. For ``cpu`` the peak FLOP/s is measured on this
machine, once per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from chaosfm._artifacts import atomic_write_text
from chaosfm._config import ConfigError, read_config
from chaosfm.jobs._common import DatasetNames, ReadOptions
from chaosfm.jobs.train import TrainRunFile, parse_train_run_file
from chaosfm.tokenizers import make_tokenizer
from chaosfm.train import DEVICE_KINDS, SIZE_PRESETS, SizingPlan, measure_matmul_peak, parse_count, plan_size

__all__ = ["FLAGS", "ConfigSizeConfig", "estimate_table", "read", "run", "train_file"]

FLAGS: dict[str, str] = {}
"""CLI flag -> config key (every flag is the top-level key of its name)."""


def _count(value: Any) -> Any:
    return None if value is None else parse_count(value, "value")


def _size(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Count = Annotated[int, BeforeValidator(_count)]


class ConfigSizeConfig(ReadOptions):
    """``chaosfm config size``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    params: Count | None = Field(None, description="parameter budget: 150M, 1.3B, 2e9 (or give size)")
    size: Annotated[Literal[tuple(SIZE_PRESETS)] | None, BeforeValidator(_size)] = Field(  # type: ignore[valid-type]
        None, description="T-shirt preset S, M, L, XL (125M, 350M, 760M, 1.3B parameters)"
    )
    tokens: Count | None = Field(None, description="training tokens D (default: 20 per parameter, Chinchilla)")
    model: Literal["gpt", "mamba"] = Field("gpt", description="model kind")
    devices: int = Field(1, ge=1, description="data-parallel devices")
    device_kind: str = Field("cpu", description=f"one of {', '.join(DEVICE_KINDS)}")
    context_length: int | None = Field(None, ge=2, description="codes per window (default: from the width)")
    mfu: float = Field(0.4, gt=0, le=1, description="model FLOPs utilisation the time estimate assumes")
    data: DatasetNames = Field(["sp500"], description="datasets of the data section")
    tokenizer: Literal["fsq", "vqvae", "bins"] = Field("fsq", description="tokenizer kind; its default vocabulary")
    seed: int = Field(0, description="the run's seed (train.seed)")
    out: Path | None = Field(None, description="the YAML file to write (default: print it)")

    @field_validator("device_kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in DEVICE_KINDS:
            raise ValueError(f"{value!r} is not a device kind; known: {', '.join(DEVICE_KINDS)}")
        return value


def read(path: Any, overrides: dict[str, Any] | None = None) -> ConfigSizeConfig:
    """The job's config from a YAML file (optional) and flag ``overrides``."""
    return read_config(ConfigSizeConfig, path, overrides)


def train_file(config: ConfigSizeConfig, plan: SizingPlan) -> dict[str, Any]:
    """The ``chaosfm train`` config of ``plan``: data and tokenizer sections around its model and train."""
    return {
        "data": {"names": list(config.data), **config.read_options()},
        "tokenizer": {"kind": config.tokenizer},
        "model": dict(plan.model),
        "train": dict(plan.train),
    }


def _budget(config: ConfigSizeConfig) -> int:
    if (config.params is None) == (config.size is None):
        raise ConfigError(
            "params, size: give exactly one: a parameter budget (--params 150M) or a preset (--size "
            f"{'|'.join(SIZE_PRESETS)})"
        )
    return config.params if config.params is not None else SIZE_PRESETS[config.size]


def _human(value: float, unit: str = "") -> str:
    for factor, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def _duration(seconds: float) -> str:
    for size, name in ((365.25 * 86400, "years"), (86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= size:
            return f"{seconds / size:.3g} {name}"
    return f"{seconds:.3g} s"


def estimate_table(plan: SizingPlan) -> list[dict[str, str]]:
    """Rows ``{"quantity", "value", "rule"}`` of the plan's choices and estimates."""
    model, train, memory = plan.model, plan.train, plan.memory
    if plan.kind == "gpt":
        heads = f"{model['n_heads']} heads x {model['d_model'] // model['n_heads']}"
    else:
        heads = f"{2 * model['d_model'] // model['head_dim']} SSD heads x {model['head_dim']}, state {model['d_state']}"
    gb = 1e9
    fits = "" if plan.device_memory is None else f" of {plan.device_memory / gb:.3g} GB"
    rows = [
        ("model", f"{plan.kind}: d_model {model['d_model']}, n_layers {model['n_layers']}, {heads}",
         "aspect d/L near 64 (gpt) or 32 (mamba), within 10% of the budget"),
        ("parameters", f"{plan.params:,} (budget {plan.target_params:,})",
         "jax.eval_shape of the model class" + (
             "; the smallest model (embedding and head 2 V d) is over the budget"
             if plan.params > 1.1 * plan.target_params else "")),
        ("vocabulary, context", f"{model['vocab_size']}, {model['context_length']}",
         "tokenizer default; largest 2^k <= 1.5 d"),
        ("tokens", f"{plan.tokens:,} ({plan.tokens / plan.params:.3g} per parameter)",
         "20 N unless given (Hoffmann et al. 2022)"),
        ("batch", f"{train['batch_size']} windows x {model['context_length']} = {plan.batch_tokens:,} tokens/step",
         "0.292 C^0.3271 (DeepSeek LLM, 2024)"),
        ("steps", f"{plan.steps:,} ({plan.trained_tokens:,} tokens)", "tokens / batch, rounded up"),
        ("learning rate, warm-up", f"{train['learning_rate']:.3g}, {train['warmup_steps']} steps",
         "3e-3 x 128 / d (muP 1/width, Yang et al. 2022); 2% of steps"),
        ("training FLOPs", f"{_human(plan.flops['total'])} (6ND {_human(plan.flops['dense'])} + "
         f"{'attention' if plan.kind == 'gpt' else 'SSD'} {_human(plan.flops['sequence'])})",
         "Kaplan et al. 2020; Hoffmann et al. 2022 App. F"),
        ("params + grads + AdamW / device",
         f"{memory.states / gb:.3g} GB replicated, {memory.states_sharded / gb:.3g} GB sharded",
         "16 N bytes (float32 weights, grads, two moments)"),
        ("activations / device", f"{memory.activations / gb:.3g} GB, {memory.activations_remat / gb:.3g} GB with remat",
         f"{train['batch_size'] // plan.devices} windows per device; Korthikanti et al. 2022"),
        ("total / device", f"{memory.total(remat=False, sharded=False) / gb:.3g} GB (replicated, no remat), "
         f"{memory.total(remat=True, sharded=True) / gb:.3g} GB (sharded, remat){fits}", "sum of the above"),
        ("peak", f"{_human(plan.peak_flops, 'FLOP/s')} per {plan.device_kind}", plan.peak_source),
        ("time", f"{_duration(plan.seconds)} on {plan.devices} x {plan.device_kind} at MFU {plan.mfu:g}",
         "FLOPs / (devices x peak x MFU)"),
    ]
    return [{"quantity": q, "value": v, "rule": r} for q, v, r in rows]


def run(config: ConfigSizeConfig, *, peak_flops: float | None = None) -> dict[str, Any]:
    """Size the run, validate the config file through ``chaosfm train``'s own config, write it to
    ``config.out`` (if given) and return the plan.

    Args:
        config: the job's config.
        peak_flops: per-device FLOP/s to use instead of the public figure or the measurement.

    Returns:
        ``{"plan": {...}, "table": rows, "config": the train file's sections, "yaml": its text,
        "out": the path or None}``.

    Raises:
        ConfigError: naming the key (params/size, device kind, a config ``chaosfm train`` refuses).
    """
    budget = _budget(config)
    vocab = make_tokenizer(config.tokenizer).vocab_size
    peak = peak_flops
    if peak is None and DEVICE_KINDS[config.device_kind].peak_flops is None:
        peak = measure_matmul_peak()
    plan = plan_size(config.model, budget, vocab, tokens=config.tokens, device_kind=config.device_kind,
                     devices=config.devices, context_length=config.context_length, mfu=config.mfu,
                     peak_flops=peak, seed=config.seed)
    sections = train_file(config, plan)
    checked: TrainRunFile = parse_train_run_file(sections, "sized config")
    header = (f"# {plan.kind}, {plan.params:,} parameters, {plan.tokens:,} tokens: written by `chaosfm config size`.\n"
              "#   chaosfm train --config THIS_FILE --out RUN_DIR\n")
    text = header + yaml.safe_dump(checked.sections(), sort_keys=False)
    if config.out is not None:
        atomic_write_text(config.out, text)
    return {
        "plan": {
            "kind": plan.kind, "params": plan.params, "target_params": plan.target_params, "tokens": plan.tokens,
            "trained_tokens": plan.trained_tokens, "batch_tokens": plan.batch_tokens, "steps": plan.steps,
            "flops": plan.flops, "seconds": plan.seconds, "peak_flops": plan.peak_flops, "mfu": plan.mfu,
            "device_kind": plan.device_kind, "devices": plan.devices,
            "memory": {"params": plan.memory.params, "gradients": plan.memory.gradients,
                       "optimizer": plan.memory.optimizer, "activations": plan.memory.activations,
                       "activations_remat": plan.memory.activations_remat},
        },
        "table": estimate_table(plan),
        "config": checked.sections(),
        "yaml": text,
        "out": None if config.out is None else str(config.out),
    }
