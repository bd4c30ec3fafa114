"""One self-contained ``report.html``: data, fan charts, scores per class, the leakage gap, the
score over time against the random walk, and a glossary.

A part with nothing to show (a class no model has a window of, a leakage gap no model can
estimate) is left out with one line saying why, never drawn as a table of dashes.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from chaosfm import __version__
from chaosfm._artifacts import atomic_write_text, machine
from chaosfm.evaluate import COVERAGE_TARGETS, reliability
from chaosfm.report import _plots
from chaosfm.report._glossary import glossary_section, term

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}th a{color:inherit}th.text,td.text{text-align:left}
td.name{text-align:left;font-weight:600}
.ci{color:#666;font-size:.85em}
.best{background:#e3f2e1}.note{color:#555;font-size:.9em}.omitted{color:#555;font-style:italic}
img{max-width:100%;height:auto;display:block;margin:.4em 0}
dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _interval(value: Any, low: Any, high: Any) -> str:
    """A cell's value with its interval on a second, smaller line (keeps wide tables narrow)."""
    return f'{_fmt(value)}<br><span class="ci">[{_fmt(low)}, {_fmt(high)}]</span>'


def _with_values(rows: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """The metrics of ``metrics`` that some row of ``rows`` (``{model: {metric: value}}``) has a value of."""
    return [m for m in metrics if any(row.get(m) is not None for row in rows.values())]


def _empty_columns_note(metrics: Sequence[str], shown: Sequence[str]) -> str:
    """One line naming the scores left out of a table because no model has a value of them."""
    missing = [m for m in metrics if m not in shown]
    if not missing:
        return ""
    return (f'<p class="note">Not shown, no value on these windows: {html.escape(", ".join(missing))} '
            "(undefined on every window, e.g. VPT without a Lyapunov exponent).</p>")


def _class_table(compared: Mapping[str, Any], metrics: Sequence[str], higher: set[str]) -> str:
    """Models side by side on the windows of one class they all scored (``Results.compared``);
    ``windows`` is each model's own count of the class. ``metrics`` are the columns shown."""
    models = compared["models"]
    head = "".join(f"<th>{term(m)}</th>" for m in metrics)
    best: dict[str, float] = {}
    for metric in metrics:
        values = [m.get(metric) for m in models.values()]
        values = [v for v in values if v is not None]
        if values:
            if metric in COVERAGE_TARGETS:
                best[metric] = min(values, key=lambda v, t=COVERAGE_TARGETS[metric]: abs(v - t))
            else:
                best[metric] = max(values) if metric in higher else min(values)
    body = []
    for name, entry in models.items():
        if not compared["windows"][name]:
            continue  # no window of the class: windows_differ names it, a row of dashes would not
        cells = []
        for metric in metrics:
            value = entry.get(metric)
            mark = ' class="best"' if value is not None and value == best.get(metric) else ""
            cells.append(f"<td{mark}>{_fmt(value)}</td>")
        own = compared["windows"][name]
        body.append(f'<tr><td class="name">{html.escape(name)}</td><td>{own}</td>{"".join(cells)}</tr>')
    return f"<table><tr><th>model</th><th>windows</th>{head}</tr>{''.join(body)}</table>"


_NO_WINDOWS = {
    "within_pretrain": "no upstream artifact (tokenizer, pretrained encoder) of any model saw a scored "
                       "window; baselines have none",
    "in_sample": "no model was scored on rows it was fitted on",
    "fresh": "every window after the cutoff fell in the embargo",
}
"""Why a class has no window at all, per class."""


def _class_part(compared: Mapping[str, Any], window_class: str, metrics: Sequence[str], higher: set[str],
                score_in_sample: bool = True) -> list[str]:
    """The comparison table of one class, or one line saying why there is none."""
    own = compared["windows"]
    if not any(own.values()):
        why = _NO_WINDOWS[window_class]
        if window_class == "in_sample" and not score_in_sample:
            why = "protocol.score_in_sample is false, so windows a model fitted on are not scored"
        return [f'<p class="omitted">No {window_class} windows: {why}.</p>']
    if not compared["n_windows"]:
        counts = ", ".join(f"{model} {n}" for model, n in own.items())
        return [f'<p class="omitted">No {window_class} table: no window of the class was scored by every model '
                f"({html.escape(counts)}); each model's means over its own windows are in metrics.json "
                "(models).</p>"]
    shown = _with_values(compared["models"], metrics)
    if not shown:
        return [f'<p class="omitted">No {window_class} table: no score has a finite value on the '
                f'{compared["n_windows"]} windows every model scored.</p>']
    parts = [f"<h3>Scores: {window_class}, {compared_heading(compared)}</h3>"]
    differ = windows_differ(compared)
    if differ:
        parts.append(f'<p class="note">{html.escape(differ)}</p>')
    parts.append(_class_table(compared, shown, higher))
    note = _empty_columns_note(metrics, shown)
    return [*parts, note] if note else parts


def _gap_part(models: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """The leakage gap of every model that has one, or one line saying why no model has."""
    gaps = {name: {m: summary["leakage_gap"][m]["value"] for m in metrics} for name, summary in models.items()}
    estimable = {name: row for name, row in gaps.items() if any(v is not None for v in row.values())}
    if not estimable:
        most = {c: max((s[c]["n_windows"] for s in models.values()), default=0) for c in ("fresh", "within_pretrain")}
        return [f'<p class="omitted">No leakage gap (fresh − within_pretrain): it needs two or more windows of '
                f"both classes for one model, and the most any model has is {most['within_pretrain']} "
                f"within_pretrain and {most['fresh']} fresh.</p>"]
    shown = _with_values(estimable, metrics)
    head = "".join(f"<th>{term(m)}</th>" for m in shown)
    body = []
    for name in estimable:
        cells = []
        for metric in shown:
            gap = models[name]["leakage_gap"][metric]
            cells.append("<td>–</td>" if gap["value"] is None else
                         f"<td>{_interval(gap['value'], gap['ci_low'], gap['ci_high'])}</td>")
        body.append(f'<tr><td class="name">{html.escape(name)}</td>{"".join(cells)}</tr>')
    left_out = [name for name in gaps if name not in estimable]
    note = ("A dash: one of the two classes has fewer than two windows with a value, so the gap is not "
            "estimable and is not filled in.")
    if left_out:
        note += f" Not estimable for any score, so not shown: {', '.join(left_out)}."
    return ["<h3>Leakage gap (fresh − within_pretrain), 95% bootstrap interval</h3>",
            f'<p class="note">{html.escape(note)}</p>',
            f"<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"]


def compared_heading(compared: Mapping[str, Any]) -> str:
    """What a comparison table is over: ``on the 12 windows every model scored``."""
    n = compared["n_windows"]
    return f"on the {n} window{'s' if n != 1 else ''} every model scored" if n else "no window"


def windows_differ(compared: Mapping[str, Any]) -> str:
    """A sentence naming each model's own windows when they are not all the shared ones, else ``""``."""
    own = compared["windows"]
    if all(n == compared["n_windows"] for n in own.values()):
        return ""
    counts = ", ".join(f"{model} {n}" for model, n in own.items())
    return (f"The models' windows differ ({counts}): the means are over the {compared['n_windows']} they "
            "all scored; a model without a window of this class takes no part. Each model's means over "
            "its own windows are in metrics.json (models).")


def dataset_section(name: str, frame: pd.DataFrame, results: Any, columns: Sequence[str]) -> str:
    """The report section of one dataset."""
    entry = results.to_dict()
    models = entry["models"]
    metrics = results.metric_names
    higher = set(entry["higher_is_better"])
    cutoff = results.cutoff
    parts = [f"<h2>{html.escape(name)}</h2>"]
    attrs = frame.attrs
    facts = [f"{len(frame):,} rows", f"{frame['asset'].nunique()} asset(s)",
             f"{_plots.when(frame['timestamp'].min())} to {_plots.when(frame['timestamp'].max())}"]
    if attrs.get("source"):
        facts.append(f"source: {html.escape(str(attrs['source']))} ({html.escape(str(attrs.get('licence')))})")
    if attrs.get("lyapunov_exponent"):
        # A generated system's exponent is measured (Benettin); a file's is what its user gave.
        origin = "measured" if attrs.get("integrator") else "given with the data"
        facts.append(f"largest Lyapunov exponent {attrs['lyapunov_exponent']:.4g} ({origin})")
    shown = ", ".join(f"{a}: {c}" for a, c in cutoff.items()) if isinstance(cutoff, dict) else str(cutoff)
    parts.append(f'<p class="note">{"; ".join(facts)}. Cutoff {_fmt(shown)}, embargo '
                 f'{entry["embargo"]} observations, horizon {entry["horizon"]}, '
                 f'{entry["num_samples"]} samples per forecast.</p>')
    parts.append(_img(_plots.to_png(_plots.data_plot(frame, columns, cutoff, f"{name}: target series")), "data"))
    parts.extend(_fan_part(frame, results, columns))
    for window_class in ("fresh", "within_pretrain", "in_sample"):
        parts.extend(_class_part(entry["compared"][window_class], window_class, metrics, higher,
                                 results.protocol.score_in_sample))
    parts.extend(_gap_part(models, metrics))
    parts.extend(_paired_part(entry.get("paired", {}).get("fresh", {}), metrics))
    parts.extend(_reliability_part(results))
    parts.extend(_over_time_part(results, higher))
    return f'<section id="dataset-{html.escape(name)}">' + "\n".join(parts) + "</section>"


MAX_FAN_ASSETS = 3
"""Fan charts drawn per dataset, one per asset, to keep the report small: the rest are named."""
MAX_FAN_MODELS = 9
"""Panels per fan chart (three rows of three)."""
REFERENCE_OVER_TIME = "random_walk"
"""The model the score-over-time chart divides by: the forecast with no skill on a price path."""
ROLLING_ORIGINS = 5
"""Origins per rolling sum (or mean) of the score-over-time chart: enough to smooth one odd window."""


def _fan_part(frame: pd.DataFrame, results: Any, columns: Sequence[str]) -> list[str]:
    """A fan chart per asset (up to :data:`MAX_FAN_ASSETS`) on a fresh window, or one line saying why none."""
    forecasts = results.forecasts
    if forecasts is None:
        return ['<p class="omitted">No fan chart: the forecasts were not kept '
                "(evaluate(..., keep_forecasts=True)).</p>"]
    fresh = forecasts[forecasts["window_class"] == "fresh"]
    if fresh.empty:
        return ['<p class="omitted">No fan chart: no fresh window was scored.</p>']
    column = columns[0]
    assets = list(dict.fromkeys(fresh["asset"].astype(str)))
    levels = results.protocol.quantile_levels
    inner = f" and {100 * sorted(levels)[1]:g}-{100 * sorted(levels)[-2]:g}%" if len(levels) >= 4 else ""
    parts = ["<h3>Forecasts on a fresh window</h3>",
             f'<p class="note">Per asset, the latest fresh window the most models scored: the history (solid), '
             f"what happened (dotted), each model's median and its {100 * min(levels):g}-{100 * max(levels):g}%"
             f"{inner} bands, one panel per model on a shared scale"
             + (f"; column {html.escape(column)} of {html.escape(', '.join(columns))}" if len(columns) > 1 else "")
             + ".</p>"]
    horizon = results.protocol.horizon
    asset_names = frame["asset"].astype(str)
    for asset in assets[:MAX_FAN_ASSETS]:
        window = _plots.fan_window(fresh, asset, column)
        part = frame[asset_names == asset]
        # Enough history to see the series' recent path, not so much that the window is a sliver.
        history = part[part["timestamp"] < window["timestamp"].min()].tail(max(10, 4 * horizon))
        figure = _plots.fan_chart(window, history, column, levels, max_models=MAX_FAN_MODELS)
        parts.append(_img(_plots.to_png(figure), f"fan chart: {asset}"))
        models = window["model"].nunique()
        if models > MAX_FAN_MODELS:
            parts.append(f'<p class="note">{models - MAX_FAN_MODELS} more models scored this window; '
                         "their forecasts are in forecasts.parquet.</p>")
    if len(assets) > MAX_FAN_ASSETS:
        rest = ", ".join(assets[MAX_FAN_ASSETS:])
        parts.append(f'<p class="note">Not drawn, to keep the report small: {html.escape(rest)} '
                     "(their forecasts are in forecasts.parquet).</p>")
    return parts


def _over_time_part(results: Any, higher: set[str]) -> list[str]:
    """CRPS (else the first score) per window over time, relative to the random walk when it was
    scored and the score is a loss; raw, with a note saying why, otherwise."""
    scores = results.scores
    if not len(scores):
        return []
    metrics = results.metric_names
    metric = "crps" if "crps" in metrics else metrics[0]
    loss = metric not in higher and metric not in COVERAGE_TARGETS
    scored = REFERENCE_OVER_TIME in set(scores["model"])
    if scored and loss and scores["model"].nunique() > 1:
        figure = _plots.scores_over_time(scores, metric, reference=REFERENCE_OVER_TIME, every=ROLLING_ORIGINS)
        heading = f"{metric} relative to {REFERENCE_OVER_TIME} over time"
        note = (f"Each model's {metric} summed over the windows of the last {ROLLING_ORIGINS} origins (every asset), "
                f"divided by "
                f"{REFERENCE_OVER_TIME}'s over the same windows: below 1 beats the random walk. The ratio, unlike "
                f"the raw {metric}, does not rise and fall with the series' volatility.")
    else:
        figure = _plots.scores_over_time(scores, metric, every=ROLLING_ORIGINS)
        heading = f"{metric} per window over time"
        why = (f"no {REFERENCE_OVER_TIME} was scored (add it to --models)" if not scored else
               f"only {REFERENCE_OVER_TIME} was scored" if scores["model"].nunique() == 1 else
               f"{metric} is not a loss, so a ratio to {REFERENCE_OVER_TIME} would not read as better or worse")
        note = (f"Raw {metric}, rolling mean over {ROLLING_ORIGINS} origins: {why}. The raw score rises and "
                "falls with the series' volatility, so compare models with each other, not a stretch with another.")
    return [f"<h3>{html.escape(heading)}</h3>", f'<p class="note">{html.escape(note)}</p>',
            _img(_plots.to_png(figure), heading)]


def _paired_part(paired: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """Every model minus the reference on the fresh windows both scored, with its interval."""
    if not paired.get("models"):
        return []
    reference = html.escape(str(paired["reference"]))
    values = {model: {m: entries[m]["value"] for m in metrics} for model, entries in paired["models"].items()}
    metrics = _with_values(values, metrics) or list(metrics)
    head = "".join(f"<th>{term(m)}</th>" for m in metrics)
    body = []
    for model, entries in paired["models"].items():
        cells = "".join(
            f"<td>{_interval(entries[m]['value'], entries[m]['ci_low'], entries[m]['ci_high'])}</td>"
            for m in metrics
        )
        n = max((e["n_windows"] for e in entries.values()), default=0)
        body.append(f'<tr><td class="name">{html.escape(model)}</td><td>{n}</td>{cells}</tr>')
    return [
        f"<h3>Fresh windows: each model minus {reference}, paired</h3>",
        f'<p class="note">Mean over the windows both scored, with a 95% bootstrap interval that resamples '
        f'blocks of {paired["block"]} consecutive windows (overlapping windows are correlated).</p>',
        f"<table><tr><th>model</th><th>windows</th>{head}</tr>{''.join(body)}</table>",
    ]


def _reliability_part(results: Any) -> list[str]:
    """Reliability diagram, PIT histogram and the frequencies per level of every model, on the
    fresh windows (nothing when the forecasts were not kept or no window is fresh)."""
    if results.forecasts is None or not len(results.forecasts):
        return []
    table = reliability(results.forecasts, "fresh")
    if table.empty:
        return []
    levels = [c for c in table.columns if c != "n"]
    head = "".join(f"<th>{level:g}</th>" for level in levels)
    body = "".join(
        f'<tr><td class="name">{html.escape(str(model))}</td><td>{int(row["n"])}</td>'
        + "".join(f"<td>{row[level]:.3f}</td>" for level in levels) + "</tr>"
        for model, row in table.iterrows()
    )
    return [
        "<h3>Calibration on fresh windows</h3>",
        '<p class="note">Share of observed values at or below each forecast quantile, every step and '
        "column of every fresh window (n values): a calibrated model's share at level τ is τ.</p>",
        f"<table><tr><th>model</th><th>n</th>{head}</tr>{body}</table>",
        _img(_plots.reliability_plot(table, "reliability and PIT histogram, fresh windows"), "reliability"),
    ]


def write_report(path: str | os.PathLike[str], title: str, sections: Sequence[str],
                 intro: str = "") -> Path:
    """Write the self-contained HTML report (plots embedded as PNG), ending with a glossary of the
    window classes and of every score a section's tables link (:func:`term`)."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    box = machine()
    body = "".join(sections)
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">chaosfm {__version__}, {when}, on {html.escape(str(box['platform']))} with
{box['cpu_count']} CPU core(s). Windows are classified from what each model and its upstream
artifacts saw (<code>trained_through</code>): <b>in_sample</b> (the model fitted on it),
<b>within_pretrain</b> (an upstream artifact saw it), <b>fresh</b> (nothing saw it, after the
embargo); see the <a href="#glossary">glossary</a> for these and every score.</p>
{intro}
{body}
{glossary_section(body)}
</body></html>"""
    return atomic_write_text(path, document)
