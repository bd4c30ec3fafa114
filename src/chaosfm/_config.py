"""Config files: YAML read with ``safe_load`` into pydantic models with ``extra="forbid"``.

A typo is an error that names the key and the keys allowed there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or flag is wrong: the message names the key and the rule."""


def split_commas(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]``; anything else passes through: one flag or YAML string can
    name several datasets or models."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(split_commas)]
"""A list of names that also reads from one comma-separated string."""


def _allowed(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``location`` inside ``model`` (best effort through nested models)."""
    current: Any = model
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def explain(error: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """One readable message for the first problems pydantic found."""
    lines = []
    for problem in error.errors()[:5]:
        location = tuple(problem["loc"])
        key = ".".join(str(p) for p in location) or "<root>"
        if problem["type"] == "extra_forbidden":
            allowed = _allowed(model, location)
            lines.append(f"unknown key {key!r}; allowed here: {', '.join(allowed)}")
        else:
            lines.append(f"key {key!r}: {problem['msg']} (got {problem.get('input')!r})")
    return ConfigError(f"{source}: " + "; ".join(lines))


def parse_config(model: type[M], data: Any, source: str = "<config>") -> M:
    """Validate a mapping into ``model``, turning pydantic's errors into a ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise explain(error, model, source) from None


def read_config(model: type[M], path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> M:
    """Read a YAML config file into ``model``; ``overrides`` (from CLI flags) win over the file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of keys to values")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_config(model, data, str(file))
