"""Config files: YAML read with ``safe_load`` into pydantic models with ``extra="forbid"``.

A typo is an error that names the key and the keys allowed there. A config is small: a file over
:data:`MAX_CONFIG_BYTES`, or one whose aliases expand to more than :data:`MAX_CONFIG_NODES` values
(a "billion laughs"), is refused before anything walks it, and a value quoted in an error is cut to
:data:`MAX_QUOTED_CHARS` characters.
"""

from __future__ import annotations

import copy
import numbers
import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB): the presets are a few kilobytes."""
MAX_CONFIG_NODES = 100_000
"""Most values (mappings, lists and scalars, every alias counted as a copy) a config may expand to."""
MAX_QUOTED_CHARS = 200
"""Longest value an error message quotes; the rest is elided."""


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


def quote(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters, so an error line stays one readable line."""
    if isinstance(value, (dict, list, tuple, set)):  # a few items of each, not the whole tree
        short = reprlib.Repr()
        short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
        short.maxdict = short.maxlist = short.maxtuple = short.maxset = 8
        text = short.repr(value)
    else:
        text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def did_you_mean(word: Any, choices: Any) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a mistyped ``word``, or ``""`` when none
    is close: the one suggester of commands, flags, config keys, datasets and models."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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
            lines.append(f"unknown key {quote(key)}{did_you_mean(location[-1], allowed)}; allowed here: "
                         f"{', '.join(allowed)}")
        else:
            lines.append(f"key {quote(key)}: {problem['msg']} (got {quote(problem.get('input'))})")
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


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file (``safe_load``: loading never runs code).

    Raises:
        ConfigError: no such file, not YAML, or not a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    with open(file, "rb") as stream:
        raw = stream.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_CONFIG_BYTES:,} bytes; a config file is a few kilobytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8") from None
    data = _safe_load(text, file) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of keys to values")
    return data


def _safe_load(text: str, file: Path) -> Any:
    """``yaml.safe_load(text)``, refusing a document whose aliases expand beyond
    :data:`MAX_CONFIG_NODES` values or refer to themselves.

    The composer shares one node per anchor, so a "billion laughs" is small in memory until
    something walks it as a tree (pydantic, ``copy.deepcopy``, ``repr``): its expanded size is
    counted on the node graph, each shared node once, before anything is constructed.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set(), file)
        if size > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{file}: its aliases expand to more than {MAX_CONFIG_NODES:,} values; "
                "write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{file}: nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], file: Path) -> int:
    """The number of values ``node`` becomes once every alias is copied out (memoised by node)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_nodes:
        raise ConfigError(f"{file}: line {node.start_mark.line + 1}: an alias refers to a value that contains it")
    if isinstance(node, yaml.ScalarNode):
        return 1
    open_nodes.add(id(node))
    children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes, file)
        if total > MAX_CONFIG_NODES:  # stop counting: the answer is already "too big"
            break
    open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


def merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data`` with ``overrides`` on top; a dotted key (``train.seed``) sets a nested key.

    ``None`` values are skipped (a flag that was not given). ``data`` is not modified.
    """
    merged = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *sections, last = key.split(".")
        target = merged
        for section in sections:
            if not isinstance(target.get(section), dict):
                target[section] = {}
            target = target[section]
        target[last] = value
    return merged


def read_config(
    model: type[M],
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "flags",
) -> M:
    """The one config reader: a YAML file (optional) with ``overrides`` merged on top.

    Args:
        model: the pydantic model (``extra="forbid"``) to validate into.
        path: a YAML file, or None for flags alone.
        overrides: from CLI flags; dotted keys (``train.seed``) set nested keys; None is skipped.
        source: what the errors name when there is no file.

    Raises:
        ConfigError: naming the file or flags, the key and the keys allowed there.
    """
    data = read_yaml(path) if path is not None else {}
    return parse_config(model, merge_overrides(data, overrides), str(path) if path is not None else source)


def require_int(value: Any, name: str, minimum: int | None = 1) -> int:
    """``value`` as an int, or a ConfigError (a ValueError) naming ``name`` and the rule broken
    (``minimum`` None: any integer).

    The one integer validator of chaosfm: counts, lengths, sizes and seeds given by a person.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ConfigError(f"{name} must be an integer{bound}, got {quote(value)}")
    if minimum is not None and value < minimum:
        rule = "positive (>= 1)" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"{name} must be {rule}, got {value}")
    return int(value)


X64_ENV = "CHAOSFM_X64"
"""Environment variable that, set to ``1`` (or ``true``/``yes``/``on``), runs chaosfm in float64."""


def x64_requested(flag: bool | None = None) -> bool:
    """Whether float64 is asked for: by ``flag`` (a config's ``x64``) or by ``$CHAOSFM_X64``."""
    if flag:
        return True
    return os.environ.get(X64_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def enable_x64(flag: bool | None = None) -> bool:
    """Switch JAX to float64 for the whole process when :func:`x64_requested`; return whether it is on.

    A job calls this first thing in ``run`` (before it creates an array), so every array the run
    makes afterwards, and every program it traces, defaults to float64. It never switches float64
    off: another part of the process may have asked for it.
    """
    import jax  # lazily: the CLI parses flags before JAX loads

    if x64_requested(flag) and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return bool(jax.config.jax_enable_x64)


def float_dtype() -> Any:
    """The float dtype JAX computes in here: float64 with x64 on (:func:`enable_x64`), else float32.

    Code that builds state from scratch asks this rather than writing ``float32``, so the same code
    runs in either precision. It honours ``jax.enable_x64`` contexts too.
    """
    import jax
    import jax.numpy as jnp

    return jax.dtypes.canonicalize_dtype(jnp.float64)
