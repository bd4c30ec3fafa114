"""A model's parameters, leaf by leaf: where each array sits, its shape, size, dtype and scale."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd

__all__ = ["parameter_report"]

_COLUMNS = ["name", "shape", "count", "dtype", "mean_abs", "std"]


def _name(path: tuple[Any, ...]) -> str:
    """``blocks[0].attention.qkv.weight`` from a key path of ``tree_flatten_with_path``."""
    out = ""
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            out += f".{key.name}"
        elif isinstance(key, jax.tree_util.SequenceKey):
            out += f"[{key.idx}]"
        elif isinstance(key, jax.tree_util.DictKey):
            out += f"[{key.key!r}]"
        else:
            out += str(key)
    return out.lstrip(".")


def parameter_report(model: Any) -> pd.DataFrame:
    """One row per array leaf of ``model`` (an equinox module or any pytree).

    Returns:
        ``name`` (the attribute path), ``shape`` (text, e.g. ``"64x32"``), ``count`` (elements),
        ``dtype``, ``mean_abs`` (mean of ``|w|``) and ``std`` (of ``w``), in leaf order.
        Integer leaves report their statistics too; non-array leaves are left out.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_array))
    rows = []
    for path, leaf in leaves:
        values = np.asarray(leaf)
        floats = values.astype(np.float64)
        rows.append({
            "name": _name(path),
            "shape": "x".join(str(d) for d in values.shape) or "scalar",
            "count": int(values.size),
            "dtype": str(values.dtype),
            "mean_abs": float(np.mean(np.abs(floats))) if values.size else None,
            "std": float(np.std(floats)) if values.size else None,
        })
    return pd.DataFrame(rows, columns=_COLUMNS)
