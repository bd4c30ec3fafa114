"""The registry of named forecasters: what a config or ``--models`` may name.

Built here, in one place, from the classes themselves (no module adds itself on import). The
model-backed ones bring the model and training code (seconds of imports), so they are listed by
import path and loaded on first use: ``import chaosfm.evaluate`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from chaosfm.forecasters._base import AbstractForecaster
from chaosfm.forecasters._baselines import AutoRegressive, Garch, LastValue, RandomWalk, SeasonalNaive
from chaosfm.forecasters._har import HarRV
from chaosfm.forecasters._mlp_flow import MLPFlow
from chaosfm.forecasters._parroting import ContextParroting
from chaosfm.forecasters._reservoir import EchoStateNetwork, NextGenerationReservoir

_LOADED: dict[str, type[AbstractForecaster]] = {
    cls.name: cls
    for cls in (
        LastValue, RandomWalk, SeasonalNaive, AutoRegressive, Garch, HarRV, ContextParroting,
        EchoStateNetwork, NextGenerationReservoir, MLPFlow,
    )
}
_MODEL_BACKED = {
    "flow_mamba": ("chaosfm.forecasters._flow", "FlowMambaForecaster"),
    "token_mamba": ("chaosfm.forecasters._token_fit", "TokenMambaForecaster"),
    "token_gpt": ("chaosfm.forecasters._token_fit", "TokenGPTForecaster"),
    "market_model": ("chaosfm.forecasters._market", "CrossAssetForecaster"),
    "ensemble": ("chaosfm.forecasters._ensemble", "Ensemble"),
    # The online predictor's adapter: its forecaster is of this layer (DESIGN.md), its engine
    # stands beside it in chaosfm.predictor, imported only when the name is looked up.
    "online_predictor": ("chaosfm.predictor._forecaster", "OnlinePredictorForecaster"),
}


class _Registry(Mapping[str, type[AbstractForecaster]]):
    """Name -> forecaster class; a model-backed class is imported when first looked up."""

    def __getitem__(self, name: str) -> type[AbstractForecaster]:
        if name in _LOADED:
            return _LOADED[name]
        module, attribute = _MODEL_BACKED[name]
        cls = getattr(importlib.import_module(module), attribute)
        _LOADED[name] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter([*dict.fromkeys([*_LOADED, *_MODEL_BACKED])])

    def __len__(self) -> int:
        return len(set(_LOADED) | set(_MODEL_BACKED))


FORECASTERS: Mapping[str, type[AbstractForecaster]] = _Registry()
"""Forecaster name -> class, for configs and the CLI: the statistical baselines, context
parroting, the reservoirs and ``mlp_flow``, ``flow_mamba``, and the token models trained in
``fit`` (``token_mamba``, ``token_gpt``: quantile bins and a Mamba-2 or a GPT over their codes),
and ``ensemble``: a linear pool of other registered forecasters, its weights fitted by CRPS."""


def make_forecaster(name: str, **options: Any) -> AbstractForecaster:
    """Build the forecaster registered as ``name`` with constructor ``options``.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or an option the
            forecaster does not take (the message lists the ones it does).
    """
    if name not in FORECASTERS:
        known = ", ".join(sorted(FORECASTERS))
        raise ValueError(f"unknown forecaster {name!r}; known forecasters: {known}")
    cls = FORECASTERS[name]
    signature = inspect.signature(cls)
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        try:
            signature.bind(**options)
        except TypeError:
            accepted = ", ".join(signature.parameters) or "none"
            raise ValueError(
                f"forecaster {name!r} does not take option(s) {sorted(options)}; it takes: {accepted}"
            ) from None
    return cls(**options)
