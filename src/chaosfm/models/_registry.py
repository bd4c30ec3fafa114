"""Model kinds by name: build a model from its config, and round-trip configs through JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxtyping import PRNGKeyArray

from chaosfm.models._base import AbstractCodeModel
from chaosfm.models._gpt import GPT, GPTConfig
from chaosfm.models._mamba import Mamba, MambaConfig

__all__ = ["MODEL_KINDS", "build_model", "config_from_json", "config_to_json"]

MODEL_KINDS: dict[str, tuple[type, type[AbstractCodeModel]]] = {
    "gpt": (GPTConfig, GPT),
    "mamba": (MambaConfig, Mamba),
}


def _kind_of(config: Any) -> str:
    for kind, (config_class, _) in MODEL_KINDS.items():
        if isinstance(config, config_class):
            return kind
    raise TypeError(f"not a model config: {type(config).__name__}; known: {sorted(MODEL_KINDS)}")


def build_model(config: GPTConfig | MambaConfig, *, key: PRNGKeyArray) -> AbstractCodeModel:
    """A freshly initialised model of the kind ``config`` describes."""
    return MODEL_KINDS[_kind_of(config)][1](config, key=key)


def config_to_json(config: GPTConfig | MambaConfig) -> dict[str, Any]:
    """``{"kind": ..., **fields}``: what is saved beside the weights."""
    return {"kind": _kind_of(config), **dataclasses.asdict(config)}


def config_from_json(values: dict[str, Any]) -> GPTConfig | MambaConfig:
    """Inverse of :func:`config_to_json`; refuses unknown kinds and keys (a file from elsewhere)."""
    values = dict(values)
    kind = values.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"model config: unknown kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    config_class = MODEL_KINDS[kind][0]
    names = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{config_class.__name__}: unknown keys {unknown}; allowed: {sorted(names)}")
    return config_class(**values)
