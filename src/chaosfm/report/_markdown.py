"""Markdown tables of an evaluation, for a README or a notebook: the fresh windows every model
scored, and each model's paired difference against the reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHOWN = ("crps", "valid_prediction_time", "coverage_80", "coverage_50", "mase", "directional_accuracy")
"""The scores a summary shows when scored, in this order; the first is the headline paired with the reference."""


def _number(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.3g}"


def evaluation_markdown(metrics: Mapping[str, Any], shown: Sequence[str] = SHOWN) -> str:
    """One table per dataset of ``metrics.json`` (and per asset of a dataset with several): the
    fresh windows every model scored, and the headline score's paired difference against the
    reference with its interval."""
    out = []
    for name, entry in metrics["datasets"].items():
        out.append(_table(name, entry, shown))
        for asset, part in entry.get("assets", {}).items():
            out.append(_table(f"{name}: {asset}", part, shown))
    return "\n".join(t for t in out if t)


def _table(title: str, entry: Mapping[str, Any], shown: Sequence[str]) -> str:
    fresh = entry["compared"]["fresh"]
    first = next(iter(fresh["models"].values()), {})
    columns = [k for k in shown if k in first]
    if not columns:
        return ""
    paired = entry.get("paired", {}).get("fresh", {})
    reference = paired.get("reference") if paired.get("models") else None
    headline = columns[0]
    head = ["model", "fresh windows", *columns] + ([f"{headline} − {reference} [95% CI]"] if reference else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, means in fresh["models"].items():
        cells = [f"`{model}`", str(fresh["windows"][model]), *(_number(means.get(k)) for k in columns)]
        if reference:
            difference = paired["models"].get(model, {}).get(headline)
            cells.append("reference" if model == reference else (
                f"{_signed(difference['value'])} [{_signed(difference['ci_low'])}, {_signed(difference['ci_high'])}]"
                if difference and difference["value"] is not None else "–"))
        rows.append("| " + " | ".join(cells) + " |")
    block = f" (blocks of {paired['block']} windows)" if reference else ""
    return (f"### {title}\n\nFresh windows, on the {fresh['n_windows']} every model scored; "
            f"paired intervals by block bootstrap{block}.\n\n" + "\n".join(rows) + "\n")
