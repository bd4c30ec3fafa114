"""``chaosfm greeks``: Malliavin Greeks of a basket digital under D-asset Black–Scholes.

Prices ``e^{-rT} 1{sum_i w_i S_i(T) > K}`` and estimates its delta and vega with respect to each
asset and its gamma matrix by the likelihood-ratio (Malliavin) weights of
:func:`chaosfm.predictor.basket_digital_greeks`. Writes ``greeks.csv`` (one row per Greek and
asset, with its standard error and, for one asset, the Black–Scholes closed form and the error in
standard errors beside it), ``metrics.json``, ``config.yaml`` and ``meta.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from chaosfm._artifacts import write_json
from chaosfm._config import ConfigError, enable_x64, read_config
from chaosfm.jobs._common import finish_run, out_field, write_config

__all__ = ["FLAGS", "GreeksConfig", "read", "run"]

FLAGS: dict[str, str] = {}
"""CLI flag -> config key (every flag is the key of the same name)."""


def _numbers(value: Any) -> Any:
    """``"100, 90"`` or ``100`` -> ``[100.0, 90.0]`` or ``[100]``; a list passes through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return value


Numbers = Annotated[list[float], BeforeValidator(_numbers)]
"""Floats from a list, one number, or one comma-separated string (a flag)."""


class GreeksConfig(BaseModel):
    """``chaosfm greeks``: every flag is a key here."""

    model_config = ConfigDict(extra="forbid")

    spot: Numbers = Field(min_length=1, description="S_i(0) of each asset (D values)")
    strike: float = Field(description="K: the digital pays 1 when the weighted basket ends above it")
    vol: Numbers = Field(min_length=1, description="sigma_i per year: D values, or one for every asset")
    rate: float = Field(0.0, description="r, continuously compounded per year: drift and discount")
    maturity: float = Field(1.0, gt=0, description="T in years")
    weights: Numbers | None = Field(None, description="w_i of the basket (default: 1 / D each)")
    correlation: Numbers | list[Numbers] = Field(
        default_factory=lambda: [0.0], description="one number (every pair), D * D numbers row by row, or a D x D matrix"
    )
    paths: int = Field(1 << 20, ge=2, description="Monte Carlo paths")
    batch_size: int = Field(1 << 18, ge=1, description="paths drawn at once (bounds memory)")
    seed: int = 0
    out: Path = out_field("greeks", "folder to write")
    x64: bool = Field(
        False, description="draw the paths and weights in float64 (default float32; also CHAOSFM_X64=1)"
    )


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> GreeksConfig:
    """The config file (optional) with flag ``overrides`` on top."""
    return read_config(GreeksConfig, path, overrides)


def market(config: GreeksConfig) -> dict[str, np.ndarray]:
    """Spots, weights, vols ``(D,)`` and the correlation ``(D, D)`` of ``config``, checked.

    Raises:
        ConfigError: naming the key whose value does not fit (length, sign, correlation matrix).
    """
    spots = np.asarray(config.spot, np.float64)
    size = spots.size
    vols = np.asarray(config.vol * size if len(config.vol) == 1 else config.vol, np.float64)
    weights = np.full(size, 1.0 / size) if config.weights is None else np.asarray(config.weights, np.float64)
    for name, values in (("vol", vols), ("weights", weights)):
        if values.shape != (size,):
            raise ConfigError(f"{name}: {values.size} values for {size} assets (spot); give {size}")
    if np.any(spots <= 0):
        raise ConfigError(f"spot: every S_i(0) must be positive, got {spots.tolist()}")
    if np.any(vols <= 0):
        raise ConfigError(f"vol: every sigma_i must be positive, got {vols.tolist()}")
    raw = np.asarray(config.correlation, np.float64)
    if raw.size == 1:
        correlation = np.full((size, size), float(raw.reshape(-1)[0]))
        np.fill_diagonal(correlation, 1.0)
    elif raw.size == size * size:
        correlation = raw.reshape(size, size)
    else:
        raise ConfigError(f"correlation: {raw.size} values; give one (every pair) or {size * size} ({size} x {size})")
    if not (np.allclose(correlation, correlation.T) and np.allclose(np.diag(correlation), 1.0)):
        raise ConfigError(f"correlation: must be symmetric with a unit diagonal, got {correlation.tolist()}")
    if np.linalg.eigvalsh(correlation).min() <= 0:
        raise ConfigError(f"correlation: must be positive definite, got {correlation.tolist()}")
    return {"spots": spots, "weights": weights, "vols": vols, "correlation": correlation}


def table(greeks: Any, closed_form: dict[str, float] | None) -> pd.DataFrame:
    """One row per Greek and asset (``i``; ``j`` too for gamma) with value, standard error and,
    when given, the closed form and ``(value - closed form) / standard error``."""
    rows = [{"greek": "price", "i": "", "j": "", "value": greeks.price, "standard_error": greeks.price_se}]
    for name in ("delta", "vega"):
        values, errors = getattr(greeks, name), getattr(greeks, f"{name}_se")
        rows += [{"greek": name, "i": i, "j": "", "value": v, "standard_error": e}
                 for i, (v, e) in enumerate(zip(values, errors))]
    size = greeks.gamma.shape[0]
    rows += [{"greek": "gamma", "i": i, "j": j, "value": greeks.gamma[i, j], "standard_error": greeks.gamma_se[i, j]}
             for i in range(size) for j in range(size)]
    frame = pd.DataFrame(rows)
    if closed_form is not None:
        frame["closed_form"] = frame["greek"].map(closed_form)
        frame["error_in_se"] = (frame["value"] - frame["closed_form"]) / frame["standard_error"]
    return frame


def run(config: GreeksConfig) -> dict[str, Any]:
    """Estimate the Greeks: ``greeks.csv``, ``metrics.json``, ``config.yaml``, ``meta.json``."""
    import jax

    from chaosfm.predictor import basket_digital_greeks, digital_closed_form

    x64 = enable_x64(config.x64)  # before any array is made
    inputs = market(config)
    greeks = basket_digital_greeks(
        inputs["spots"], inputs["weights"], config.strike, inputs["vols"], inputs["correlation"], config.rate,
        config.maturity, config.paths, key=jax.random.key(config.seed), batch_size=config.batch_size,
    )
    closed_form = None
    if inputs["spots"].size == 1:  # w S(T) > K is S(T) > K / w: a one-asset digital
        weight = float(inputs["weights"][0])
        if weight > 0:
            closed_form = digital_closed_form(float(inputs["spots"][0]), config.strike / weight,
                                              float(inputs["vols"][0]), config.rate, config.maturity)
    frame = table(greeks, closed_form)
    out = Path(config.out)
    write_config(out, config)
    frame.to_csv(out / "greeks.csv", index=False)
    metrics = {
        "model": "black_scholes",
        "payoff": "exp(-r T) 1{sum_i w_i S_i(T) > K}",
        "assets": int(inputs["spots"].size),
        "paths": int(greeks.n_paths),
        "price": {"value": greeks.price, "standard_error": greeks.price_se},
        "delta": {"value": greeks.delta.tolist(), "standard_error": greeks.delta_se.tolist()},
        "gamma": {"value": greeks.gamma.tolist(), "standard_error": greeks.gamma_se.tolist()},
        "vega": {"value": greeks.vega.tolist(), "standard_error": greeks.vega_se.tolist()},
        "closed_form": closed_form,
        "max_abs_error_in_se": None if closed_form is None else float(frame["error_in_se"].abs().max()),
        "x64": x64,
    }
    write_json(out / "metrics.json", metrics)
    finish_run(out, seed=config.seed, trained_through=None, kind="greeks")
    return metrics
