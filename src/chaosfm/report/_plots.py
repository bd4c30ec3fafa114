"""Figures for reports, rendered off-screen (Agg).

The report's plot functions return matplotlib figures, so a test can read their axes and labels;
:func:`to_png` renders one to PNG bytes and closes it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from chaosfm.evaluate import quantile_names  # noqa: E402

CLASS_COLOURS = {"in_sample": "#9e9e9e", "within_pretrain": "#e69f00", "fresh": "#0072b2"}


def to_png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def time_axis(axis: plt.Axes, stamps: Any) -> None:
    """Label the x axis of ``axis`` as time.

    Dates get a date locator and ``YYYY-MM-DD`` labels (with the hour when ``stamps`` span less
    than three days); numeric timestamps (a trajectory's time) are labelled as such, never as
    steps.

    Args:
        axis: the axes whose x data are ``stamps``.
        stamps: the timestamps plotted, datetime-like or numeric.
    """
    values = pd.Series(np.asarray(stamps).ravel())
    # A zone-aware column arrives as an object array of Timestamps.
    dated = pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.infer_dtype(values, skipna=True) == "datetime"
    if not dated:
        axis.set_xlabel("time (numeric timestamps of the data)")
        return
    span = values.max() - values.min() if len(values) else pd.Timedelta(0)
    fmt = "%Y-%m-%d" if span >= pd.Timedelta(days=3) else "%Y-%m-%d %H:%M"
    axis.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    axis.xaxis.set_major_formatter(mdates.DateFormatter(fmt))
    axis.tick_params(axis="x", labelrotation=30)
    axis.set_xlabel("date")


def when(stamp: Any) -> str:
    """A timestamp for a title: the date alone at midnight, else date and time; a number as it is."""
    if isinstance(stamp, (pd.Timestamp, np.datetime64)):
        stamp = pd.Timestamp(stamp)
        return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.strftime("%Y-%m-%d %H:%M")
    return f"{stamp:g}" if isinstance(stamp, (float, np.floating)) else str(stamp)


def data_plot(frame: pd.DataFrame, columns: Sequence[str], cutoff: Any, title: str) -> plt.Figure:
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
    time_axis(axis, frame["timestamp"])
    return figure


def frame_kind_is_market(columns: Sequence[str]) -> bool:
    return list(columns) == ["close"]


def fan_window(forecasts: pd.DataFrame, asset: str, column: str) -> pd.DataFrame:
    """The rows of the fresh window a fan chart of ``asset`` draws: the latest origin that the most
    models scored, so every panel shows the same window (rows of :class:`~chaosfm.evaluate.ForecastTable`).

    Raises:
        ValueError: no fresh forecast of ``asset`` and ``column``.
    """
    rows = forecasts[(forecasts["asset"].astype(str) == str(asset)) & (forecasts["window_class"] == "fresh")
                     & (forecasts["column"] == column)]
    if rows.empty:
        raise ValueError(f"no fresh forecast of asset {asset!r}, column {column!r} to draw")
    models_per_origin = rows.groupby("origin")["model"].nunique()
    origin = models_per_origin[models_per_origin == models_per_origin.max()].index.max()
    return rows[rows["origin"] == origin]


def fan_chart(window: pd.DataFrame, history: pd.DataFrame, column: str, levels: Sequence[float], *,
              max_models: int = 9) -> plt.Figure:
    """History, truth and each model's forecast bands on one window, one panel per model.

    Args:
        window: the window's rows of a forecast table (:func:`fan_window`): one per model and step,
            with ``timestamp``, ``observed``, ``median`` and the quantile-level columns.
        history: the asset's rows before the window (``timestamp`` and ``column``).
        column: the target column drawn.
        levels: the table's quantile levels (``Protocol.quantile_levels``), at least two.
        max_models: panels at most; the first models of ``window`` are drawn.

    Returns:
        The figure: shaded bands between the outermost quantile levels and the next pair in,
        the median, the truth dotted; the x axis in the data's time (dates or numeric time).
    """
    levels = sorted(float(q) for q in levels)
    names = dict(zip(levels, quantile_names(levels)))
    bands = [(levels[0], levels[-1]), *([(levels[1], levels[-2])] if len(levels) >= 4 else [])]
    models = list(dict.fromkeys(window["model"]))[:max_models]
    count = len(models)
    cols = min(count, 3)
    rows = int(np.ceil(count / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True)
    for axis in axes.ravel()[count:]:
        axis.set_visible(False)
    asset = window["asset"].iloc[0]
    for axis, model in zip(axes.ravel(), models):
        part = window[window["model"] == model].sort_values("step")
        stamps = part["timestamp"].to_numpy()
        axis.plot(history["timestamp"].to_numpy(), history[column].to_numpy(), color="black", linewidth=0.9,
                  label="history")
        # The truth continues the history from its last point, so the eye follows one series.
        joined = len(history) > 0
        axis.plot(np.concatenate([history["timestamp"].to_numpy()[-1:] if joined else stamps[:0], stamps]),
                  np.concatenate([history[column].to_numpy()[-1:] if joined else [], part["observed"].to_numpy()]),
                  color="black", linestyle=":", label="truth")
        for alpha, (low, high) in zip((0.2, 0.35), bands):
            axis.fill_between(stamps, part[names[low]].to_numpy(), part[names[high]].to_numpy(), alpha=alpha,
                              color="#0072b2", label=f"{100 * low:g}-{100 * high:g}%")
        axis.plot(stamps, part["median"].to_numpy(), color="#0072b2", label="median")
        axis.set_title(str(model), fontsize=9)
        axis.tick_params(labelsize=7)
        time_axis(axis, np.concatenate([history["timestamp"].to_numpy(), stamps]))
        axis.xaxis.label.set_fontsize(7)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(f"{asset}, {column}: fresh window from {when(window['timestamp'].min())}", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def scores_over_time(scores: pd.DataFrame, metric: str, reference: str | None = None, every: int = 5) -> plt.Figure:
    """Each model's score over the windows' origins, shaded by protocol class.

    Args:
        scores: ``Results.scores``: one row per (model, asset, origin) with ``window_class`` and
            ``metric``.
        metric: the score drawn.
        reference: when given, each other model is drawn relative to it: the sum of its scores over
            the windows of the last ``every`` origins divided by the reference's sum over the same
            windows (a line at 1 is the reference), so a calm or a volatile stretch, which moves
            every model's loss together, cancels out. None draws the raw rolling mean.
        every: origins per rolling sum or mean.

    Returns:
        The figure; the legend sits outside the axes, right of it, and the class labels above it.
    """
    figure, axis = plt.subplots(figsize=(10, 3.2))
    table = scores.pivot_table(index=["asset", "origin"], columns="model", values=metric, aggfunc="first")
    table = table.replace([np.inf, -np.inf], np.nan)
    for model in dict.fromkeys(scores["model"]):
        if model == reference or model not in table:
            continue
        if reference is None:
            per_origin = table[model].dropna().groupby(level="origin").mean()
            line = per_origin.rolling(every, min_periods=1).mean()
        else:
            both = table[[model, reference]].dropna().groupby(level="origin").sum()
            sums = both.rolling(every, min_periods=1).sum()
            line = (sums[model] / sums[reference].where(sums[reference] > 0)).dropna()
        axis.plot(line.index, line.to_numpy(), linewidth=0.9, label=str(model))
    if reference is not None:
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":", label=f"{reference} (= 1)")
        axis.set_ylabel(f"{metric} / {reference}\n(rolling, {every} origins)")
    else:
        axis.set_ylabel(f"{metric}\n(rolling mean, {every} origins)")
    for window_class, colour in CLASS_COLOURS.items():
        part = scores[scores["window_class"] == window_class]
        if len(part):
            axis.axvspan(part["origin"].min(), part["origin"].max(), color=colour, alpha=0.08)
            axis.annotate(window_class, (part["origin"].min(), 1.01), xycoords=("data", "axes fraction"),
                          va="bottom", fontsize=8, color=colour)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    time_axis(axis, scores["origin"])
    return figure


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
