"""Package namespaces that import a module when one of its names is first read (PEP 562).

``chaosfm.data``, ``chaosfm.evaluate``, ``chaosfm.forecasters``, ``chaosfm.predictor`` and
``chaosfm.report`` re-export the names of their private modules. Imported eagerly, reading one name
(``from chaosfm.data import frame_kind``) loaded every module of the package and what they
import: matplotlib, scipy, optax, scoringrules, the chaotic systems. A restarted ``chaosfm
stream`` spent more time there than in its first prediction. With ``attach`` a package imports
only the module that defines the name asked for, once; ``dir()`` and ``__all__`` still list
everything, from the one table the package gives ``attach``.

Written here rather than taken from scientific-python's ``lazy_loader`` (whose ``attach`` is the
same idea): these twenty lines are all of it, and a dependency for them would have to be pinned
and audited like any other.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def attach(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: ``modules`` maps a module's full name to
    the names the package re-exports from it. A name read is imported from its module and bound in
    the package, so the next read is an ordinary attribute."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__, list(where)
