"""The package's layout holds: the layer order of DESIGN.md, no private imports across packages,
no dispatch on kind strings, and the evaluator and predictor importable without the models."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "chaosfm"

CORE = {"_config", "_artifacts", "_progress", "_random", "_lazy", "_storage"}
"""The small core every package may import (DESIGN.md: data imports nothing else of chaosfm);
``_lazy`` is how a package imports its modules on first use."""

LAYERS = [
    {"data"},
    {"tokenizers", "models"},
    {"train"},
    {"forecasters"},
    {"evaluate"},
    {"agents", "predictor", "report"},
    {"jobs"},
    {"cli"},
]
"""DESIGN.md's order: data -> tokenizers, models -> train -> forecasters -> evaluate -> agents,
predictor, report -> jobs -> cli. A package imports only packages of earlier layers (and the core)."""

RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every chaosfm module ``name`` imports (at any depth: lazy imports count), with its line."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("chaosfm")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("chaosfm"):
                continue
            found.append((module, node.lineno))
            # `from chaosfm.x import _y` imports the module chaosfm.x._y when _y is one.
            for alias in node.names:
                candidate = SOURCE.parent / Path(*module.split("."), alias.name)
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    found.append((f"{module}.{alias.name}", node.lineno))
    return found


def _package(module: str) -> str | None:
    """The first-level package of a chaosfm module (``chaosfm.train._loop`` -> ``train``), or None
    for the root package and its core modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in CORE else None


def test_every_package_is_placed_in_a_layer():
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANK), f"packages without a layer: {packages - set(RANK)}; gone: {set(RANK) - packages}"
    modules = {p.stem for p in SOURCE.glob("*.py")} - {"__init__"}
    assert modules <= CORE, f"top-level modules outside the core: {modules - CORE}"


def test_imports_follow_the_layer_order():
    upward = []
    for name, path in _modules():
        own = _package(name)
        for imported, line in _imports(name, path):
            other = _package(imported)
            if own is None:  # the core imports nothing of the packages
                if other is not None:
                    upward.append(f"{path}:{line}: core module {name} imports {imported}")
                continue
            if other is None or other == own:
                continue
            if RANK[other] >= RANK[own]:
                upward.append(f"{path}:{line}: {own} (layer {RANK[own]}) imports {imported} (layer {RANK[other]})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_module_imports_a_private_module_of_another_package():
    private = []
    for name, path in _modules():
        own = _package(name)
        for imported, line in _imports(name, path):
            other = _package(imported)
            if other is None or other == own:
                continue
            if any(part.startswith("_") for part in imported.split(".")[2:]):
                private.append(f"{path}:{line}: {name} imports {imported}")
    assert not private, "private imports across packages:\n" + "\n".join(private)


def test_the_layer_check_catches_an_upward_and_a_private_import(tmp_path):
    # The checks above read real files; make sure they would see the violations they look for.
    path = SOURCE / "evaluate" / "_protocol.py"
    imports = dict(_imports("chaosfm.evaluate._protocol", path))
    assert "chaosfm.forecasters" in imports and "chaosfm.data" in imports
    fake = tmp_path / "chaosfm" / "evaluate" / "_bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from chaosfm.train._loop import train\nfrom ..jobs import train as job\n")
    found = [m for m, _ in _imports("chaosfm.evaluate._bad", fake)]
    assert "chaosfm.train._loop" in found and "chaosfm.jobs" in found
    assert RANK[_package("chaosfm.train._loop")] < RANK["evaluate"] < RANK[_package("chaosfm.jobs")]


def test_no_dispatch_on_kind_strings():
    pattern = re.compile(r"is_bins|_networks|stage ==|stage in \(")
    hits = [
        f"{path}:{number}: {line.strip()}"
        for _, path in _modules()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("package", ["chaosfm.evaluate", "chaosfm.predictor"])
def test_importing_the_evaluator_or_the_predictor_loads_no_model_code(package):
    script = f"import {package}, sys, json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('chaosfm.'))))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert process.returncode == 0, process.stderr.decode()[-2000:]
    loaded = json.loads(process.stdout.decode().strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[1] in ("train", "models", "tokenizers", "jobs", "cli")]
    assert not heavy, f"import {package} loaded {heavy}"
    assert f"{package}" in loaded


def _loaded_after(script: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``script``."""
    code = f"{script}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert process.returncode == 0, process.stderr.decode()[-2000:]
    return json.loads(process.stdout.decode().strip().splitlines()[-1])


HEAVY_FOR_A_STREAM = ("matplotlib", "scoringrules", "numba", "optax", "ott", "signax", "diffrax", "sklearn",
                      "optuna", "scipy.stats", "equinox")
"""Libraries a restarted ``chaosfm stream`` does not need before its first prediction: plots, the
scores of finished predictions, the training code of the kernels, the models."""


def test_the_stream_job_imports_nothing_its_first_prediction_does_not_need():
    loaded = set(_loaded_after("import chaosfm.jobs.stream\nfrom chaosfm.predictor import run_stream"))
    heavy = sorted(m for m in HEAVY_FOR_A_STREAM if m in loaded)
    assert not heavy, f"importing the stream job loaded {heavy}"
    assert "chaosfm.predictor._stream" in loaded and "jax" in loaded


def test_a_lazy_package_imports_a_module_on_first_read_only():
    loaded = set(_loaded_after("import chaosfm.report"))
    assert "chaosfm.report" in loaded and "chaosfm.report._plots" not in loaded and "matplotlib" not in loaded
    loaded = set(_loaded_after("from chaosfm.report import term"))  # the glossary, not the plots
    assert "chaosfm.report._glossary" in loaded and "chaosfm.report._plots" not in loaded
    import chaosfm.report as report

    assert "to_png" in dir(report) and set(report.__all__) <= set(dir(report))
    with pytest.raises(AttributeError, match=r"module 'chaosfm.report' has no attribute 'to_pgn'"):
        report.to_pgn  # noqa: B018
    first = report.to_png
    assert "to_png" in vars(report) and report.to_png is first  # bound once, then an ordinary attribute
