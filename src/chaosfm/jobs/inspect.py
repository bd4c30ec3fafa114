"""``chaosfm inspect RUN``: the parameters of a trained code model (GPT or Mamba), layer by layer.

:func:`run` checks the run folder's hashes, loads its model (``train.load_run``) and returns the
per-leaf parameter report (:func:`~chaosfm.models.parameter_report`), the total parameter count
and a summary of the run: its command, seed, ``trained_through``, the model config saved beside
the weights and the resolved ``config.yaml``. With ``out`` it writes ``parameters.csv`` and
``inspect.json`` there (never into the run folder, whose files meta.json hashes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import ArtifactError, atomic_write_text, nan_to_none, write_json
from chaosfm._config import ConfigError, read_config
from chaosfm.models import config_to_json, parameter_report
from chaosfm.train import MODEL_CONFIG_FILE, load_run


class InspectConfig(BaseModel):
    """``chaosfm inspect``: which run, and where to write the report (optional)."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a run folder of chaosfm train or chaosfm stage")
    out: Path | None = Field(None, description="folder for parameters.csv and inspect.json (default: none written)")


def read(path: str | Path | None, overrides: dict[str, Any] | None = None) -> InspectConfig:
    """The config file (optional) with flag ``overrides`` on top."""
    return read_config(InspectConfig, path, overrides)


def run(config: InspectConfig) -> dict[str, Any]:
    """The parameter report of a model run.

    Returns:
        ``parameters`` (DataFrame: name, shape, count, dtype, mean_abs, std), ``total`` (scalars in
        every array leaf), ``summary`` (DataFrame: key, value) and ``out`` (the folder written, or None).

    Raises:
        ConfigError: the folder holds no code model (no model_config.json).
        ArtifactError: a file is missing or does not match its hash in meta.json.
    """
    root = Path(config.run)
    if not (root / MODEL_CONFIG_FILE).is_file():
        raise ConfigError(f"{root}: not a model run of chaosfm train or stage ({MODEL_CONFIG_FILE} is missing)")
    model, meta = load_run(root)
    parameters = parameter_report(model)
    total = int(parameters["count"].sum())
    summary = _summary(root, meta, config_to_json(model.config), total)
    out = None
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "parameters.csv", parameters.to_csv(index=False))
        write_json(out / "inspect.json", nan_to_none({
            "run": str(root), "total_parameters": total, "summary": dict(zip(summary["key"], summary["value"])),
        }))
    return {"parameters": parameters, "total": total, "summary": summary, "out": None if out is None else str(out)}


def _summary(root: Path, meta: dict[str, Any], model_config: dict[str, Any], total: int) -> pd.DataFrame:
    """Rows ``key, value``: what the run is, the model config, then config.yaml's keys flattened."""
    rows: list[tuple[str, Any]] = [
        ("command", meta.get("command")),
        ("seed", meta.get("seed")),
        ("trained_through", meta.get("trained_through")),
        ("total_parameters", total),
    ]
    rows += [(f"model.{key}", value) for key, value in model_config.items()]
    config_path = root / "config.yaml"
    if config_path.is_file():
        try:
            saved = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ArtifactError(f"{config_path}: cannot be read as YAML ({error})") from None
        rows += [(f"config.{key}", value) for key, value in _flat(saved)]
    return pd.DataFrame([(key, _text(value)) for key, value in rows], columns=["key", "value"])


def _flat(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(values, dict):
        out = []
        for key, value in values.items():
            out += _flat(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, values)]


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "–" if value is None else str(value)
