"""``chaosfm leakage --sizes ... --cfm-weights ...``: the leakage study over a grid of encoder
sizes and flow-matching weights (the capacity study).

The design's open question: with a larger encoder, must the weight of the flow-matching loss grow
to keep the leakage gap closed? Each cell ``(size, weight)`` is one whole leakage study
(:func:`chaosfm.jobs.leakage.run`) of one model, its encoder at that size (:data:`JEPA_SIZES`) and
``cfm_weight`` that weight (0: ``jepa``, no flow head; otherwise ``jepa_cfm``), pretrained leaky and
fenced on the same rows, with the same heads, dates, seed and scoring. The grid's table has, per
cell, the CRPS leakage gap (fresh - within-pretrain of the leaky encoder) and the paired leaky -
fenced CRPS difference on the same windows, each with its interval, and the fresh Sharpe gap.

Cells are written to ``OUT/cells/SIZE-cfmWEIGHT/`` (a study folder each; a rerun reuses encoders
already trained with the same config). The grid writes ``capacity.csv``, ``capacity.md``,
``capacity.png`` and ``metrics.json`` to ``OUT``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._artifacts import atomic_write_text, nan_to_none, write_json
from chaosfm._config import ConfigError
from chaosfm._progress import say
from chaosfm.jobs._common import finish_run, write_config

__all__ = ["FAST_GRID", "JEPA_SIZES", "capacity_table", "run_grid"]

JEPA_SIZES: dict[str, dict[str, int]] = {
    # One Mamba layer of width 16: the fast grid's smaller size (the leakage tests' encoders).
    "nano": {"d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "d_embed": 8, "d_pred": 8},
    # The shipped JEPA configs' size (configs/jepa-tiny.yaml): ~40k encoder parameters.
    "tiny": {"d_model": 32, "n_layers": 2, "d_state": 16, "head_dim": 16, "d_embed": 32, "d_pred": 16},
    "small": {"d_model": 64, "n_layers": 4, "d_state": 32, "head_dim": 32, "d_embed": 64, "d_pred": 32},
    "medium": {"d_model": 128, "n_layers": 6, "d_state": 64, "head_dim": 64, "d_embed": 128, "d_pred": 64},
}
"""Encoder sizes of the capacity study: JEPAConfig fields; every other model key comes from the config."""

FAST_GRID = {"sizes": ["nano", "tiny"], "cfm_weights": [0.0, 1.0], "steps": 3, "batch_size": 4, "max_windows": 40,
             "num_samples": 10, "n_bootstrap": 100}
"""``--fast``: the smallest grid that still varies both axes, three updates of four windows per encoder
(the suite runs it; a demonstration of the machinery, not a measurement)."""


def _label(size: str, weight: float) -> str:
    return f"{size}-cfm{weight:g}"


def _cell_config(config: Any, size: str, weight: float) -> Any:
    """The leakage study of one cell: one model at ``size`` with flow weight ``weight``."""
    kind = "jepa_cfm" if weight > 0 else "jepa"
    update = {
        "models": [kind],
        "model": {**config.model, **JEPA_SIZES[size]},
        "sizes": None,
        "cfm_weights": None,
        "fast": False,
        "out": Path(config.out) / "cells" / _label(size, weight),
    }
    if weight > 0:
        update["cfm_weight"] = weight
    return config.model_copy(update=update)


def grid_of(config: Any) -> tuple[Any, list[str], list[float]]:
    """The config the cells share (``--fast`` budgets applied where not given) and the two axes.

    Raises:
        ConfigError: an unknown size, a negative weight, or the grid with ``agent``.
    """
    if config.agent:
        raise ConfigError("sizes / cfm_weights: the capacity grid scores the forecasting heads; leave out agent")
    sizes = list(config.sizes or (FAST_GRID["sizes"] if config.fast else ["tiny"]))
    weights = [float(w) for w in (config.cfm_weights or (FAST_GRID["cfm_weights"] if config.fast else [config.cfm_weight]))]
    unknown = [s for s in sizes if s not in JEPA_SIZES]
    if unknown:
        raise ConfigError(f"sizes: unknown {unknown[0]!r}; known: {', '.join(JEPA_SIZES)}")
    if any(w < 0 for w in weights):
        raise ConfigError(f"cfm_weights: {min(weights):g} is negative; 0 means no flow head")
    if len(set(sizes)) < len(sizes) or len(set(weights)) < len(weights):
        raise ConfigError("sizes / cfm_weights: each value once")
    if config.fast:
        given = config.model_fields_set
        update = {k: FAST_GRID[k] for k in ("max_windows", "num_samples", "n_bootstrap") if k not in given}
        if "train" not in given:
            steps = FAST_GRID["steps"]
            update["train"] = config.train.model_copy(update={
                "steps": steps, "batch_size": FAST_GRID["batch_size"], "checkpoint_every": steps, "warmup_steps": 0,
                "log_every": 1})
        config = config.model_copy(update=update)
    return config, sizes, weights


def _interval(entry: dict[str, Any] | None) -> tuple[float, float, float]:
    entry = entry or {}
    return tuple(float("nan") if entry.get(k) is None else float(entry[k]) for k in ("value", "ci_low", "ci_high"))


def _row(size: str, weight: float, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    kind = "jepa_cfm" if weight > 0 else "jepa"
    leaky, fenced = metrics["models"][f"{kind} (leaky)"], metrics["models"][f"{kind} (fenced)"]
    gap, gap_low, gap_high = _interval(leaky["crps_pct"]["leakage_gap"])
    same_entry = metrics["same_windows_leaky_minus_fenced"].get(kind, {})
    same, same_low, same_high = _interval(same_entry.get("crps_pct"))
    sharpe, sharpe_low, sharpe_high = _interval(leaky["sharpe"]["leakage_gap"])
    return {
        "size": size, "cfm_weight": weight, "model": kind, "params": int(leaky["params"]),
        "crps_fresh_leaky": leaky["crps_pct"]["fresh"].get("crps_pct"),
        "crps_fresh_fenced": fenced["crps_pct"]["fresh"].get("crps_pct"),
        "crps_gap": gap, "crps_gap_low": gap_low, "crps_gap_high": gap_high,
        "same_windows": same, "same_windows_low": same_low, "same_windows_high": same_high,
        "same_windows_n": int(same_entry.get("n_windows", 0)),
        "sharpe_gap": sharpe, "sharpe_gap_low": sharpe_low, "sharpe_gap_high": sharpe_high,
        "heldout_collapsed": bool(leaky["pretrain"]["heldout"].get("collapsed")),
        "seconds": seconds,
    }


def _fmt(value: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
    return f"**{text}**" if low > 0 or high < 0 else text


def capacity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The grid as a reader's table: one row per cell, intervals in brackets (bold when they exclude 0)."""
    return pd.DataFrame({
        "size": rows["size"],
        "cfm weight": [f"{w:g}" for w in rows["cfm_weight"]],
        "params": [f"{p:,}" for p in rows["params"]],
        "fresh CRPS % (leaky / fenced)": [
            "–" if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)) else f"{a:.3f} / {b:.3f}"
            for a, b in zip(rows["crps_fresh_leaky"], rows["crps_fresh_fenced"])],
        "CRPS gap, fresh − within-pretrain [95% CI]": [
            _fmt(*r) for r in zip(rows["crps_gap"], rows["crps_gap_low"], rows["crps_gap_high"])],
        "leaky − fenced, same windows [95% CI]": [
            _fmt(*r) + f" (n={n})" for *r, n in zip(rows["same_windows"], rows["same_windows_low"],
                                                     rows["same_windows_high"], rows["same_windows_n"])],
        "Sharpe gap [95% CI]": [
            _fmt(*r, digits=2) for r in zip(rows["sharpe_gap"], rows["sharpe_gap_low"], rows["sharpe_gap_high"])],
    })


def _plot(rows: pd.DataFrame, path: Path) -> None:
    """The paired leaky - fenced difference against the flow weight, one line per size, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for size, part in rows.groupby("size", sort=False):
        for ax, key in zip(axes, ("same_windows", "crps_gap")):
            y = part[key].to_numpy(float)
            err = np.vstack([y - part[f"{key}_low"].to_numpy(float), part[f"{key}_high"].to_numpy(float) - y])
            ax.errorbar(part["cfm_weight"], y, yerr=err, marker="o", capsize=3, label=size)
    for ax, title in zip(axes, ("leaky − fenced CRPS %, same windows", "CRPS gap, fresh − within-pretrain (leaky)")):
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("cfm weight")
    axes[0].set_ylabel("CRPS, % of the last close")
    axes[0].legend(title="size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_grid(config: Any, run_study: Any) -> dict[str, Any]:
    """Run the leakage study ``run_study`` once per ``(size, weight)`` cell; write the grid's files.

    Returns the grid's metrics (``cells``: one dict per cell, as the rows of ``capacity.csv``).
    """
    started = time.perf_counter()
    config, sizes, weights = grid_of(config)
    out = Path(config.out)
    write_config(out, config)
    rows = []
    cells = [(size, weight) for size in sizes for weight in weights]
    for index, (size, weight) in enumerate(cells, 1):
        say(f"capacity cell {index}/{len(cells)}: {size} encoder, cfm weight {weight:g}")
        cell_started = time.perf_counter()
        metrics = run_study(_cell_config(config, size, weight))
        rows.append(_row(size, weight, metrics, round(time.perf_counter() - cell_started, 1)))
    table = pd.DataFrame(rows)
    seconds = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "capacity.csv", table.to_csv(index=False))
    shown = capacity_table(table)
    lines = ["# Capacity study: the leakage gap over encoder size and flow weight", "",
             f"Data {', '.join(config.data)}; horizon {config.horizon}; {config.train.steps} pretraining steps per "
             f"encoder; seed {config.seed}. Each cell is a leakage study of its own (cells/SIZE-cfmWEIGHT/report.md).",
             "CRPS in % of the last close, lower is better; intervals 95%, bold when they exclude 0.", "",
             "| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    per_cell = ", ".join(f"{r['size']}/{r['cfm_weight']:g}: {r['seconds']:.0f} s" for r in rows)
    lines += ["", f"Wall time {seconds} s ({per_cell})."]
    atomic_write_text(out / "capacity.md", "\n".join(lines) + "\n")
    _plot(table, out / "capacity.png")
    metrics = nan_to_none({"datasets": config.data, "sizes": sizes, "cfm_weights": weights,
                           "cells": table.drop(columns="seconds").to_dict(orient="records")})
    write_json(out / "metrics.json", metrics)
    finish_run(out, seed=config.seed, trained_through=None, kind="capacity_study", wall_time_s=seconds)
    return metrics
