"""Configs of a training run: the loop (:class:`TrainConfig`) and the model section, validated early.

Everything is a pydantic model with ``extra="forbid"``, so a typo is a :class:`ConfigError` that
names the key and the keys allowed there. :func:`check_against_data` then checks what only the
data can tell (vocabulary, stream lengths, exogenous input, devices), before any step is taken.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from chaosfm._config import ConfigError, parse_config
from chaosfm.models import GPT_SIZES, MAMBA_SIZES, GPTConfig, MambaConfig

__all__ = [
    "DEVICES_HELP",
    "MESH_HELP",
    "GPTSection",
    "MambaSection",
    "MeshShape",
    "ModelSection",
    "TrainConfig",
    "TrainRunConfig",
    "devices_of_the_mesh",
    "mesh_type",
    "parse_train_run_config",
]

_Dtype = Literal["float32", "bfloat16", "float16"]


class MeshShape(BaseModel):
    """``train.mesh: {data: D, fsdp: F}``: D × F devices, the batch split over both axes,
    parameters and optimizer state split over ``fsdp`` (:func:`~chaosfm.train.param_sharding`)."""

    model_config = ConfigDict(extra="forbid")

    data: int = Field(1, gt=0, description="data-parallel replicas")
    fsdp: int = Field(1, gt=0, description="devices each parameter and its optimizer state are split over")


def _read_mesh(value: Any, key: str = "train.mesh") -> Any:
    """``auto``, null or ``{data, fsdp}``, with one message naming ``key`` otherwise
    (not pydantic's two, one per member of the union)."""
    if value is None or value == "auto" or isinstance(value, MeshShape):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{key}: {value!r} is not a layout; write {{data: D, fsdp: F}} or auto")
    try:
        return MeshShape.model_validate(value)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            part = ".".join(str(piece) for piece in problem["loc"])
            if problem["type"] == "extra_forbidden":
                problems.append(f"unknown key {part!r}; allowed: data, fsdp")
            else:
                problems.append(f"{part}: {problem['msg']} (got {problem.get('input')!r})")
        raise ValueError(f"{key}: " + "; ".join(problems)) from None


def mesh_type(key: str = "train.mesh") -> Any:
    """The type of a config's ``mesh`` key (``{data, fsdp}``, ``auto`` or null), its errors
    naming ``key``: one declaration for every config that takes a mesh."""
    return Annotated[MeshShape | Literal["auto"] | None, BeforeValidator(functools.partial(_read_mesh, key=key))]


DEVICES_HELP = "devices to train on, laid out by mesh; null: one device (all of them with mesh: auto)"
MESH_HELP = ("('data', 'fsdp') layout: {data: D, fsdp: F}, or auto (all devices on data unless the training "
             "state does not fit one device); null: {data: devices, fsdp: 1}")


def devices_of_the_mesh(devices: int | None, mesh: Any, section: str = "train") -> int | None:
    """The device count of a config with ``devices`` and ``mesh`` keys under ``section`` (``""``:
    top-level keys): a mesh of D × F devices is a run on that many devices.

    Raises:
        ValueError: ``devices`` is set and is not D × F.
    """
    prefix = f"{section}." if section else ""
    if isinstance(mesh, MeshShape):
        count = mesh.data * mesh.fsdp
        if devices is None:
            return count
        if devices != count:
            raise ValueError(
                f"{prefix}mesh: data {mesh.data} × fsdp {mesh.fsdp} = {count} devices, "
                f"but {prefix}devices is {devices}; the product must be the device count"
            )
    return devices


_Mesh = mesh_type("train.mesh")


class TrainConfig(BaseModel):
    """The training loop: optimiser, schedule, guards, checkpoints, logging, parallelism."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, gt=0, description="optimizer updates in the whole run")
    batch_size: int = Field(16, gt=0, description="windows per update (across all devices)")
    learning_rate: float = Field(3e-3, gt=0, description="peak AdamW learning rate")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up from 0 to learning_rate")
    final_lr_fraction: float = Field(1e-4, gt=0, le=1, description="cosine decays to lr * this")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled decay, on matrices only")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, description="global-norm clipping; null disables it")
    checkpoint_every: int = Field(100, gt=0, description="steps between checkpoints (and at the end)")
    keep_checkpoints: int = Field(2, gt=0, description="newest checkpoints kept on disk")
    log_every: int = Field(10, gt=0, description="steps between log.jsonl lines")
    eval_every: int | None = Field(
        None, gt=0, description="steps between held-out losses (val_loss in log.jsonl); null: a tenth "
        "of steps (at least 1), so a short run still gets ten points"
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="the last fraction of each asset's training rows (at or before "
        "the cutoff) kept out of the gradient for the held-out loss; 0: no held-out loss"
    )
    seed: int = Field(0, description="every key of the run derives from it")
    tbptt_segments: int = Field(
        1, ge=1, description="segments per window; the model state carries across them, gradient stopped"
    )
    devices: int | None = Field(None, gt=0, description=DEVICES_HELP)
    mesh: _Mesh = Field(None, description=MESH_HELP)
    eval_segment: int | None = Field(
        None, gt=0, description="segment length when scoring held-out codes; null: the context length"
    )

    @model_validator(mode="after")
    def _devices_of_the_mesh(self) -> "TrainConfig":
        # A mesh of D × F devices is a run on that many devices: the jobs' device checks (count
        # available, batch split) then cover it before anything trains.
        self.devices = devices_of_the_mesh(self.devices, self.mesh)
        return self


class _ModelSectionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(gt=1, description="codebook size of the tokenizer")
    context_length: int = Field(256, gt=1, description="codes per training window (segment)")
    d_model: int | None = Field(None, gt=0)
    n_layers: int | None = Field(None, gt=0)
    dtype: _Dtype = "float32"

    def to_model_config(self) -> GPTConfig | MambaConfig:
        """The frozen model config (size preset with the fields set here on top)."""
        raise NotImplementedError

    def _overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"kind", "size"}).items() if v is not None}


class GPTSection(_ModelSectionBase):
    """``model:`` section for a GPT."""

    kind: Literal["gpt"]
    size: Literal[tuple(GPT_SIZES)] = "tiny"  # type: ignore[valid-type]
    n_heads: int | None = Field(None, gt=0)
    n_kv_heads: int | None = Field(None, gt=0)
    mlp_ratio: int | None = Field(None, gt=0)
    rope_base: float | None = Field(None, gt=0)

    def to_model_config(self) -> GPTConfig:
        return _build(GPTConfig, self.size, self._overrides())


class MambaSection(_ModelSectionBase):
    """``model:`` section for a Mamba-2 (and its hybrid / Mamba-3 options)."""

    kind: Literal["mamba"]
    size: Literal[tuple(MAMBA_SIZES)] = "tiny"  # type: ignore[valid-type]
    d_state: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    expand: int | None = Field(None, gt=0)
    d_conv: int | None = Field(None, gt=0)
    chunk_size: int | None = Field(None, gt=0)
    attention_every: int | None = Field(None, ge=0)
    attention_heads: int | None = Field(None, gt=0)
    attention_kv_heads: int | None = Field(None, gt=0)
    exo_clock: bool = False
    trapezoidal: bool = False
    complex_phase: bool = False
    bc_norm: bool = False
    gated_mlp: bool = False

    def to_model_config(self) -> MambaConfig:
        return _build(MambaConfig, self.size, self._overrides())


def _build(config_class: type, size: str, overrides: dict[str, Any]) -> Any:
    try:
        return config_class.from_size(size, **overrides)
    except ValueError as error:
        # The dataclass names its fields ("n_heads: must divide ..."); say where they live.
        raise ConfigError("; ".join(f"model.{problem}" for problem in str(error).split("; "))) from None


ModelSection = Annotated[GPTSection | MambaSection, Field(discriminator="kind")]


class TrainRunConfig(BaseModel):
    """A training run: ``model:`` and ``train:`` sections (the CLI adds data and tokenizer around it)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSection
    train: TrainConfig = Field(default_factory=TrainConfig)


class _GPTRun(TrainRunConfig):
    model: GPTSection


class _MambaRun(TrainRunConfig):
    model: MambaSection


_RUNS: dict[str, type[TrainRunConfig]] = {"gpt": _GPTRun, "mamba": _MambaRun}


def parse_train_run_config(data: Any, source: str = "<config>") -> TrainRunConfig:
    """Validate a mapping into a :class:`TrainRunConfig` and build its model config, or raise
    :class:`ConfigError` naming the key (``model.d_model``, ``train.steps``) and the keys allowed."""
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        kind = data["model"].get("kind")
        if kind not in _RUNS:
            raise ConfigError(
                f"{source}: key 'model.kind': {kind!r} is not a model kind; allowed: {', '.join(_RUNS)}"
            )
        # Validate against the section of that kind first, so errors read model.<key>, not
        # model.<kind>.<key>, and list the keys that kind allows.
        parse_config(_RUNS[kind], data, source)
    config = parse_config(TrainRunConfig, data, source)
    config.model.to_model_config()
    return config


def check_against_data(
    config: TrainRunConfig,
    *,
    vocab_size: int,
    stream_lengths: dict[str, int],
    has_exo: bool,
    max_code: int | None = None,
    available_devices: int | None = None,
) -> None:
    """What only the data can tell; raises :class:`ConfigError` naming the key.

    Args:
        config: the run config.
        vocab_size: the tokenizer's codebook size.
        stream_lengths: codes per training stream (asset).
        has_exo: whether the data carries the exogenous series.
        max_code: the largest code in the training streams.
        available_devices: ``len(jax.devices())``.
    """
    model, train = config.model, config.train
    if model.vocab_size != vocab_size:
        raise ConfigError(
            f"model.vocab_size: {model.vocab_size} does not match the tokenizer's vocabulary of "
            f"{vocab_size} codes"
        )
    if max_code is not None and max_code >= vocab_size:
        raise ConfigError(f"model.vocab_size: the data holds code {max_code}, outside 0..{vocab_size - 1}")
    window = model.context_length * train.tbptt_segments + 1
    longest = max(stream_lengths.values(), default=0)
    if longest < window:
        need = (
            f"context_length * train.tbptt_segments + 1 = {window}"
            if train.tbptt_segments > 1
            else f"context_length + 1 = {window}"
        )
        raise ConfigError(
            f"model.context_length: {model.context_length} is longer than the data: a window needs "
            f"{need} codes, the longest training stream has {longest}"
        )
    if isinstance(model, MambaSection) and model.exo_clock and not has_exo:
        raise ConfigError(
            "model.exo_clock: true needs the exogenous series (realized volatility) in the data"
        )
    if train.devices is not None:
        if available_devices is not None and train.devices > available_devices:
            raise ConfigError(f"train.devices: {train.devices} asked for, {available_devices} available")
        if train.batch_size % train.devices:
            raise ConfigError(
                f"train.batch_size: {train.batch_size} does not split over train.devices={train.devices}"
            )


def stream_lengths(streams: dict[str, np.ndarray]) -> dict[str, int]:
    return {asset: int(np.asarray(codes).shape[0]) for asset, codes in streams.items()}
