"""chaosfm: forecast chaotic and financial time series, and tell the truth about how well it did.

``chaosfm.Forecaster`` is the frame API (``from_name``, ``load``, ``fit``, ``predict`` over Nixtla,
Chronos or chaosfm long frames) and ``chaosfm.evaluate(df, models, h)`` scores models on such a
frame under the leakage protocol; both load on first use, so ``import chaosfm`` stays light (the
command line parses its flags before JAX is imported).
"""

__version__ = "0.1.0"

__all__ = ["Forecaster", "__version__", "evaluate"]

_LAZY = {"Forecaster": "chaosfm.forecasters", "evaluate": "chaosfm"}
"""Public name -> the package that defines it, imported when the name is first read
(``evaluate`` is the subpackage itself, which is callable)."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        if _LAZY[name] == __name__:  # a subpackage: importing it binds it here
            return importlib.import_module(f"{__name__}.{name}")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
