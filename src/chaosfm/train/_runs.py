"""Run folders of trained models: their file names, and reading them back after checking hashes.

A job writes a run folder; forecasters, agents and later stages read it here. Three kinds:

- a **code model** (``chaosfm train``, ``chaosfm stage``): ``model_config.json``, ``model.eqx``,
  ``tokenizer/``, ``codes.json`` (how frames became code streams), ``config.yaml``,
  ``meta.json`` (``kind: code_model``); :func:`load_code_run`;
- a **pretrained JEPA** (``chaosfm pretrain``): ``model_config.json``, ``scaler.json``,
  ``model.eqx``, ``tokenizer/`` when it reads codes (``kind: jepa``); :func:`load_pretrained`;
- a **multitask head** (``chaosfm multitask``): ``model_config.json``, ``scaler.json``,
  ``model.eqx`` (``kind: multitask``); :func:`load_multitask_run`.

Every loader checks the sha256 of every file ``meta.json`` lists first and names a damaged file;
nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import yaml

from chaosfm._artifacts import ArtifactError, sha256, verify_run
from chaosfm._config import ConfigError
from chaosfm.data import TrainedThrough, trained_through_from_json
from chaosfm.models import (
    JEPA,
    AbstractCodeModel,
    FeatureMamba,
    JEPAConfig,
    MultitaskConfig,
    build_model,
    config_from_json,
)
from chaosfm.tokenizers import AbstractTokenizer, load_tokenizer
from chaosfm.train._encoder_inputs import EncoderInputs, FeatureScaler

__all__ = [
    "CODES_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_CONFIG_FILE",
    "MODEL_FILE",
    "SCALER_FILE",
    "TOKENIZER_DIR",
    "CodeRun",
    "load_code_run",
    "load_multitask_run",
    "load_pretrained",
    "load_run",
    "serialise",
    "tokenizer_sha256",
]

CONFIG_FILE = "config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
MODEL_FILE = "model.eqx"
METRICS_FILE = "metrics.json"
CODES_FILE = "codes.json"
SCALER_FILE = "scaler.json"
TOKENIZER_DIR = "tokenizer"

# Runs written before window_norm and window_terms existed were trained without them.
_BEFORE_WINDOW_NORM = {"window_norm": False, "window_terms": False}


def serialise(model: eqx.Module) -> bytes:
    """The array leaves of ``model`` (``eqx.tree_serialise_leaves``): what ``model.eqx`` holds."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


def _deserialise(path: Path, skeleton: Any) -> Any:
    try:
        with open(path, "rb") as stream:
            return eqx.tree_deserialise_leaves(stream, skeleton)
    except Exception as error:  # noqa: BLE001 - any failure is a damaged or foreign file
        raise ArtifactError(f"{path}: cannot be restored into {type(skeleton).__name__} ({error})") from None


def tokenizer_sha256(directory: str | os.PathLike[str]) -> str:
    """One sha256 over the files of a tokenizer folder (name and content of each)."""
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.relative_to(root)}:{sha256(path)}\n".encode())
    return digest.hexdigest()


def load_run(run_dir: str | os.PathLike[str]) -> tuple[AbstractCodeModel, dict[str, Any]]:
    """The trained code model of a run folder and its meta.json, after checking every file's hash.

    Raises:
        ArtifactError: naming a missing or damaged file.
    """
    root = Path(run_dir)
    meta = verify_run(root)
    config_path = root / MODEL_CONFIG_FILE
    try:
        model_config = config_from_json(json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ArtifactError(f"{config_path}: cannot be read as a model config ({error})") from None
    return _deserialise(root / MODEL_FILE, build_model(model_config, key=jax.random.key(0))), meta


@dataclass(frozen=True)
class CodeRun:
    """A code-model run read back: what its forecaster and its next stage need.

    Attributes:
        path: the run folder.
        model: the trained GPT or Mamba.
        meta: ``meta.json``.
        tokenizer: the fitted tokenizer its codes come from.
        layout: ``codes.json`` (target columns, exogenous statistics, stream scales).
        config: ``config.yaml`` (the resolved config it was trained with).
        trained_through: what the model (and every ancestor stage) saw.
        upstream_trained_through: what the tokenizer (and the ancestors' tokenizers) saw.
    """

    path: Path
    model: AbstractCodeModel
    meta: dict[str, Any]
    tokenizer: AbstractTokenizer
    layout: dict[str, Any]
    config: dict[str, Any]
    trained_through: TrainedThrough
    upstream_trained_through: TrainedThrough

    @property
    def columns(self) -> list[str]:
        return list(self.layout["columns"])


def load_code_run(run_dir: str | os.PathLike[str]) -> CodeRun:
    """A run of ``chaosfm train`` or ``chaosfm stage``, every hash checked.

    Raises:
        ConfigError: the folder is not such a run.
        ArtifactError: a file is missing or damaged, or the model and tokenizer disagree.
    """
    root = Path(run_dir)
    if not (root / CODES_FILE).is_file():
        raise ConfigError(f"{root}: not a run of `chaosfm train --config` ({CODES_FILE} is missing)")
    model, meta = load_run(root)
    try:
        tokenizer = load_tokenizer(root / TOKENIZER_DIR)
        layout = json.loads((root / CODES_FILE).read_text())
        config_path = root / CONFIG_FILE
        config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ArtifactError(f"{root}: tokenizer/, {CODES_FILE} or {CONFIG_FILE} cannot be read ({error})") from None
    recorded = meta.get("tokenizer_sha256")
    if recorded is not None and recorded != tokenizer_sha256(root / TOKENIZER_DIR):
        raise ArtifactError(f"{root / TOKENIZER_DIR}: not the tokenizer meta.json records")
    if int(model.config.vocab_size) != tokenizer.vocab_size:
        raise ArtifactError(
            f"{root}: its model has {model.config.vocab_size} codes, its tokenizer {tokenizer.vocab_size}"
        )
    return CodeRun(
        path=root,
        model=model,
        meta=meta,
        tokenizer=tokenizer,
        layout=layout,
        config=config,
        trained_through=trained_through_from_json(meta.get("trained_through")) or {},
        upstream_trained_through=trained_through_from_json(meta.get("upstream_trained_through")) or {},
    )


def load_pretrained(run_dir: str | os.PathLike[str]) -> tuple[JEPA, EncoderInputs, dict[str, Any]]:
    """The JEPA, what its encoder reads (:class:`EncoderInputs`) and meta.json of a pretrain run
    (``trained_through`` and ``upstream_trained_through`` parsed).

    Raises:
        ArtifactError: naming a missing or damaged file.
    """
    root = Path(run_dir)
    meta = verify_run(root)
    if meta.get("kind") != "jepa":
        raise ArtifactError(f"{root}: not a run of `chaosfm pretrain` (meta.json kind is {meta.get('kind')!r})")
    try:
        model_config = JEPAConfig(**{**_BEFORE_WINDOW_NORM, **json.loads((root / MODEL_CONFIG_FILE).read_text())})
        scaler = FeatureScaler.from_json(json.loads((root / SCALER_FILE).read_text()))
        vol_window = int((yaml.safe_load((root / CONFIG_FILE).read_text()) or {}).get("data", {}).get("vol_window", 20))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as error:
        raise ArtifactError(f"{root}: config.yaml, model_config.json or scaler.json cannot be read ({error})") from None
    try:
        inputs = EncoderInputs.load(root, scaler, vol_window, TOKENIZER_DIR if model_config.reads_codes else None,
                                    model_config.session, model_config.clock_unit)
    except (OSError, ValueError, ConfigError) as error:
        raise ArtifactError(f"{root / TOKENIZER_DIR}: the encoder's tokenizer cannot be loaded ({error})") from None
    if inputs.vocab_size != model_config.vocab_size:
        raise ArtifactError(
            f"{root / TOKENIZER_DIR}: a tokenizer of {inputs.vocab_size} codes, but the encoder embeds {model_config.vocab_size}"
        )
    model = _deserialise(root / MODEL_FILE, JEPA(model_config, key=jax.random.key(0)))
    meta = dict(meta)
    meta["trained_through"] = trained_through_from_json(meta.get("trained_through"))
    meta["upstream_trained_through"] = trained_through_from_json(meta.get("upstream_trained_through"))
    return model, inputs, meta


def load_multitask_run(run_dir: str | os.PathLike[str]) -> tuple[FeatureMamba, dict[str, Any], dict[str, Any]]:
    """The trained multitask network, its scaler (``scaler.json``) and ``meta.json``, after checking hashes."""
    root = Path(run_dir)
    meta = verify_run(root)
    if meta.get("kind") != "multitask":
        raise ArtifactError(f"{root}: a run of kind {meta.get('kind')!r}, not a multitask run")
    try:
        config = MultitaskConfig(**json.loads((root / MODEL_CONFIG_FILE).read_text()))
        scaler = json.loads((root / SCALER_FILE).read_text())
    except (OSError, ValueError, TypeError) as error:
        raise ArtifactError(f"{root}: model_config.json or scaler.json cannot be read ({error})") from None
    return _deserialise(root / MODEL_FILE, FeatureMamba(config, key=jax.random.key(0))), scaler, meta
