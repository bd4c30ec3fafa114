"""The tokenizer registry: kind -> class, and the one way to make or load a tokenizer.

Built here, in one place, from the classes themselves. A config names a tokenizer by ``kind``
(``fsq``, ``vqvae``, ``bins``) and sets fields of its config dataclass through ``options``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaosfm._config import ConfigError
from chaosfm.tokenizers._base import CONFIG_FILE, AbstractTokenizer, read_header
from chaosfm.tokenizers._bins import BinTokenizer
from chaosfm.tokenizers._fsq import FSQTokenizer
from chaosfm.tokenizers._vqvae import VQVAETokenizer

TOKENIZERS: dict[str, type[AbstractTokenizer]] = {
    cls.name: cls for cls in (FSQTokenizer, VQVAETokenizer, BinTokenizer)
}
"""Tokenizer kind -> class."""


def make_tokenizer(kind: str, options: Mapping[str, Any] | None = None, *, source: str = "tokenizer") -> AbstractTokenizer:
    """An unfitted tokenizer of ``kind`` whose config has ``options`` (fields of its config dataclass).

    Lists in ``options`` (from YAML) become tuples.

    Raises:
        ConfigError: an unknown kind or option, or a bad value, naming ``source``.
    """
    if kind not in TOKENIZERS:
        raise ConfigError(f"{source}.kind: {kind!r} is not a tokenizer; allowed: {', '.join(TOKENIZERS)}")
    tokenizer_class = TOKENIZERS[kind]
    config_class = tokenizer_class.config_class
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
    allowed = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(
            f"{source}.options: unknown key(s) {unknown} for a {kind} tokenizer; allowed: {', '.join(sorted(allowed))}"
        )
    try:
        return tokenizer_class(config_class(**values))
    except ConfigError as error:
        raise ConfigError(f"{source}.options: {error}") from None


def load_tokenizer(directory: str | Path) -> AbstractTokenizer:
    """Load whichever tokenizer ``directory`` holds (reads its ``tokenizer.json``; hashes checked
    when the folder has a ``meta.json``)."""
    header = read_header(directory)
    kind = header.get("kind")
    if kind not in TOKENIZERS:
        raise ConfigError(f"{Path(directory) / CONFIG_FILE}: unknown tokenizer kind {kind!r}")
    return TOKENIZERS[kind].load(directory)
