"""chaosfm: forecast chaotic and financial time series, and tell the truth about how well it did.

``chaosfm.Forecaster`` is the frame API (``from_name``, ``load``, ``fit``, ``predict`` over Nixtla,
Chronos or chaosfm long frames); it loads on first use, so ``import chaosfm`` stays light (the
command line parses its flags before JAX is imported).
"""

__version__ = "0.1.0"

__all__ = ["Forecaster", "__version__"]

_LAZY = {"Forecaster": "chaosfm.forecasters"}
"""Public name -> the package that defines it, imported when the name is first read."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
