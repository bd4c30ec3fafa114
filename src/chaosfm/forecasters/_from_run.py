"""Forecasters read back from run folders: one registry from what a run's ``meta.json`` says it
holds to the forecaster that loads it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chaosfm._artifacts import verify_run
from chaosfm._config import ConfigError
from chaosfm.forecasters._base import AbstractForecaster
from chaosfm.forecasters._jepa import JEPAForecaster
from chaosfm.forecasters._token import TokenForecaster

__all__ = ["RUN_FORECASTERS", "load_forecaster"]

RUN_FORECASTERS: dict[str, type[AbstractForecaster]] = {
    "code_model": TokenForecaster,  # `chaosfm train`, `chaosfm stage`
    "jepa": JEPAForecaster,  # `chaosfm pretrain`: a frozen encoder with ridge readouts
}
"""``meta.json`` kind -> the forecaster that loads such a run."""


def load_forecaster(run_dir: str | os.PathLike[str], **options: Any) -> AbstractForecaster:
    """The forecaster of a run folder (hashes checked), built with ``options``.

    Raises:
        ConfigError: the folder is not a run, or a run of a kind that does not forecast.
        ArtifactError: a file is missing or damaged.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ConfigError(f"runs: {root} is not a folder")
    kind = verify_run(root).get("kind")
    if kind not in RUN_FORECASTERS:
        raise ConfigError(
            f"runs: {root} is a {kind!r} run, which does not forecast; runs that do: "
            + ", ".join(f"{k} ({cls.__name__})" for k, cls in RUN_FORECASTERS.items())
        )
    try:
        return RUN_FORECASTERS[kind].load(root, **options)
    except TypeError as error:  # an option the forecaster does not take
        raise ConfigError(f"model_options.{root.name}: {error}") from None
