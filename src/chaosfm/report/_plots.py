"""Figures for reports, rendered off-screen (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CLASS_COLOURS = {"in_sample": "#9e9e9e", "within_pretrain": "#e69f00", "fresh": "#0072b2"}


def to_png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def data_plot(frame: pd.DataFrame, columns: Sequence[str], cutoff: Any, title: str) -> bytes:
    """The target series of every asset with the fitting cutoff marked."""
    figure, axis = plt.subplots(figsize=(10, 3.2))
    colours = {}
    for asset, part in frame.groupby("asset", sort=False):
        for column in columns[:3]:
            label = f"{asset} {column}" if len(columns) > 1 or frame["asset"].nunique() > 1 else column
            (line,) = axis.plot(part["timestamp"], part[column], linewidth=0.7, label=label)
            colours.setdefault(str(asset), line.get_color())
    # One cutoff for every asset, or one per asset (drawn in the asset's colour).
    cuts = cutoff.items() if isinstance(cutoff, dict) else ([(None, cutoff)] if cutoff is not None else [])
    for asset, cut in cuts:
        colour = "black" if asset is None or len(colours) == 1 else colours.get(str(asset), "black")
        axis.axvline(cut, color=colour, linestyle="--", linewidth=1)
    if cuts:
        first = min(cut for _, cut in cuts)
        axis.annotate(" cutoff: fitted before, scored after", (first, 1.0), xycoords=("data", "axes fraction"),
                      va="top", fontsize=8)
    if frame_kind_is_market(columns):
        axis.set_yscale("log")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper left")
    return to_png(figure)


def frame_kind_is_market(columns: Sequence[str]) -> bool:
    return list(columns) == ["close"]


def fan_chart(examples: Sequence[Any], column: int = 0) -> bytes:
    """History, truth and the forecast's 10-90% and 25-75% bands, one panel per model."""
    count = max(1, len(examples))
    cols = min(count, 3)
    rows = int(np.ceil(count / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for axis in axes.ravel()[count:]:
        axis.set_visible(False)
    for axis, example in zip(axes.ravel(), examples):
        name = example.forecast.columns[column]
        steps = np.arange(1, example.forecast.horizon + 1)
        history = example.history[name].to_numpy()
        axis.plot(np.arange(-len(history) + 1, 1), history, color="black", linewidth=0.9, label="history")
        axis.plot(steps, example.truth[name].to_numpy(), color="black", linestyle=":", label="truth")
        q = example.forecast.quantile([0.1, 0.25, 0.5, 0.75, 0.9])[:, :, column]
        axis.fill_between(steps, q[0], q[4], alpha=0.2, color="#0072b2", label="10-90%")
        axis.fill_between(steps, q[1], q[3], alpha=0.35, color="#0072b2", label="25-75%")
        axis.plot(steps, q[2], color="#0072b2", label="median")
        axis.set_title(f"{example.model} ({example.asset}, {example.window_class})", fontsize=9)
        axis.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return to_png(figure)


def scores_over_time(scores: pd.DataFrame, metric: str) -> bytes:
    """A window's score against its origin, coloured by protocol class, one line per model."""
    figure, axis = plt.subplots(figsize=(10, 3.2))
    for model, part in scores.groupby("model", sort=False):
        part = part.sort_values("origin")
        axis.plot(part["origin"], part[metric].rolling(5, min_periods=1).mean(), linewidth=0.9, label=model)
    for window_class, colour in CLASS_COLOURS.items():
        part = scores[scores["window_class"] == window_class]
        if len(part):
            axis.axvspan(part["origin"].min(), part["origin"].max(), color=colour, alpha=0.08)
            axis.annotate(window_class, (part["origin"].min(), 1.0), xycoords=("data", "axes fraction"),
                          va="top", fontsize=8, color=colour)
    axis.set_ylabel(f"{metric} (rolling mean of 5 windows)")
    axis.legend(fontsize=7)
    return to_png(figure)


def reward_curve(entries: Sequence[dict[str, Any]]) -> bytes:
    """``reward_mean`` (with a running mean of 10 steps) and the KL to the SFT model per logged
    step of an RL stage (``log.jsonl`` records holding ``reward_mean``)."""
    steps = [e["step"] for e in entries]
    figure, axis = plt.subplots(figsize=(7, 3))
    rewards = np.asarray([e["reward_mean"] for e in entries])
    axis.plot(steps, rewards, color="#0072b2", linewidth=0.6, alpha=0.5, label="reward (batch mean)")
    # Batches differ in how predictable their contexts are: a running mean shows the trend.
    smooth = np.convolve(rewards, np.ones(min(10, rewards.size)) / min(10, rewards.size), mode="valid")
    axis.plot(steps[len(steps) - smooth.size :], smooth, color="#0072b2", label="running mean of 10 steps")
    axis.set_xlabel("step")
    axis.set_ylabel("reward")
    twin = axis.twinx()
    twin.plot(steps, [e["kl"] for e in entries], color="#e69f00", linewidth=0.8, label="KL to SFT")
    twin.set_ylabel("KL (nats)")
    figure.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=3)
    axis.set_title("RL stage: reward per step")
    return to_png(figure)


def vpt_by_system(summary: pd.DataFrame) -> bytes:
    """Mean VPT per system (groups) and model (bars), with each bar's bootstrap interval.

    ``summary`` has columns ``system, model, vpt_mean, vpt_mean_low, vpt_mean_high``.
    """
    systems = list(dict.fromkeys(summary["system"]))
    models = list(dict.fromkeys(summary["model"]))
    width = 0.8 / len(models)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(systems) * max(1, len(models)) / 3), 3.6))
    for k, model in enumerate(models):
        rows = summary[summary["model"] == model].set_index("system").reindex(systems)
        positions = np.arange(len(systems)) + (k - (len(models) - 1) / 2) * width
        mean = rows["vpt_mean"].to_numpy(dtype=float)
        low = np.nan_to_num(mean - rows["vpt_mean_low"].to_numpy(dtype=float), nan=0.0)
        high = np.nan_to_num(rows["vpt_mean_high"].to_numpy(dtype=float) - mean, nan=0.0)
        axis.bar(positions, mean, width, label=model, yerr=np.clip([low, high], 0, None), capsize=2)
    axis.set_xticks(np.arange(len(systems)), systems, rotation=45 if len(systems) > 6 else 0, ha="right")
    axis.set_ylabel("mean VPT (Lyapunov times)")
    axis.legend(fontsize=7, ncol=min(4, len(models)))
    axis.grid(axis="y", alpha=0.3)
    return to_png(figure)


def reliability_plot(table: pd.DataFrame, title: str) -> bytes:
    """Reliability diagram and PIT histogram of every model (one row of ``table`` each).

    ``table`` is :func:`chaosfm.evaluate.reliability`: per model, the frequency of observations at
    or below the forecast quantile at each level. Left: frequency against level, the diagonal is
    calibration. Right: the PIT histogram at the levels' resolution (the share of observations
    between consecutive quantiles), where a calibrated forecast is flat; a U shape is an interval
    too narrow, a hump an interval too wide.
    """
    levels = np.array([c for c in table.columns if c != "n"], dtype=np.float64)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    edges = np.concatenate([[0.0], levels, [1.0]])
    for model, row in table.iterrows():
        frequency = row[[c for c in table.columns if c != "n"]].to_numpy(np.float64)
        (line,) = left.plot(levels, frequency, marker="o", markersize=3, linewidth=1, label=str(model))
        shares = np.diff(np.concatenate([[0.0], frequency, [1.0]])) / np.diff(edges)
        right.step(edges, np.append(shares, shares[-1]), where="post", color=line.get_color(), linewidth=1)
    left.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":")
    left.set(xlabel="quantile level", ylabel="observed frequency at or below", xlim=(0, 1), ylim=(0, 1))
    left.legend(fontsize=7, loc="upper left")
    right.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    right.set(xlabel="PIT", ylabel="density", xlim=(0, 1))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return to_png(figure)
