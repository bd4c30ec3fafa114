"""One self-contained ``report.html``: data, fan charts, scores per class, the leakage gap."""

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

_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}td.name{text-align:left;font-weight:600}
.best{background:#e3f2e1}.note{color:#555;font-size:.9em}img{max-width:100%}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _class_table(compared: Mapping[str, Any], metrics: Sequence[str], higher: set[str]) -> str:
    """Models side by side on the windows of one class they all scored (``Results.compared``);
    ``windows`` is each model's own count of the class."""
    models = compared["models"]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
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
        cells = []
        for metric in metrics:
            value = entry.get(metric)
            mark = ' class="best"' if value is not None and value == best.get(metric) else ""
            cells.append(f"<td{mark}>{_fmt(value)}</td>")
        own = compared["windows"][name]
        body.append(f'<tr><td class="name">{html.escape(name)}</td><td>{own}</td>{"".join(cells)}</tr>')
    return f"<table><tr><th>model</th><th>windows</th>{head}</tr>{''.join(body)}</table>"


def _gap_table(models: Mapping[str, Any], metrics: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for name, summary in models.items():
        cells = []
        for metric in metrics:
            gap = summary["leakage_gap"][metric]
            if gap["value"] is None:
                cells.append("<td>–</td>")
            else:
                cells.append(f"<td>{gap['value']:.4g} [{gap['ci_low']:.4g}, {gap['ci_high']:.4g}]</td>")
        body.append(f'<tr><td class="name">{html.escape(name)}</td>{"".join(cells)}</tr>')
    return f"<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"


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
             f"{frame['timestamp'].min()} to {frame['timestamp'].max()}"]
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
    parts.append(_img(_plots.data_plot(frame, columns, cutoff, f"{name}: target series"), "data"))
    if results.examples:
        parts.append("<h3>Forecasts on a fresh window</h3>")
        parts.append(_img(_plots.fan_chart(results.examples), "fan chart"))
    for window_class in ("fresh", "within_pretrain", "in_sample"):
        compared = entry["compared"][window_class]
        parts.append(f"<h3>Scores: {window_class}, {compared_heading(compared)}</h3>")
        differ = windows_differ(compared)
        if differ:
            parts.append(f'<p class="note">{html.escape(differ)}</p>')
        parts.append(_class_table(compared, metrics, higher))
    parts.append(
        "<h3>Leakage gap (fresh − within_pretrain), 95% bootstrap interval</h3>"
        '<p class="note">A dash means one of the two classes has fewer than two windows: the gap is '
        "not estimable, and is not filled in. Baselines have no upstream artifacts, so every window "
        "they did not fit on is fresh or embargoed.</p>"
    )
    parts.append(_gap_table(models, metrics))
    parts.extend(_paired_part(entry.get("paired", {}).get("fresh", {}), metrics))
    parts.extend(_reliability_part(results))
    headline = metrics[0]
    if len(results.scores):
        parts.append(f"<h3>{html.escape(headline)} per window over time</h3>")
        parts.append(_img(_plots.scores_over_time(results.scores, headline), "scores over time"))
    return "\n".join(parts)


def _paired_part(paired: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """Every model minus the reference on the fresh windows both scored, with its interval."""
    if not paired.get("models"):
        return []
    reference = html.escape(str(paired["reference"]))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for model, entries in paired["models"].items():
        cells = "".join(
            f"<td>{_fmt(entries[m]['value'])} [{_fmt(entries[m]['ci_low'])}, {_fmt(entries[m]['ci_high'])}]</td>"
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
    """Write the self-contained HTML report (plots embedded as PNG)."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    box = machine()
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">chaosfm {__version__}, {when}, on {html.escape(str(box['platform']))} with
{box['cpu_count']} CPU core(s). Windows are classified from what each model and its upstream
artifacts saw (<code>trained_through</code>): <b>in_sample</b> (the model fitted on it),
<b>within_pretrain</b> (an upstream artifact saw it), <b>fresh</b> (nothing saw it, after the
embargo).</p>
{intro}
{''.join(sections)}
</body></html>"""
    return atomic_write_text(path, document)


def chaos_bench_section(summary: pd.DataFrame, overall: pd.DataFrame, systems: Mapping[str, Mapping[str, Any]],
                        reference: str, png: bytes, zero_shot: pd.DataFrame | None = None,
                        zero_info: Mapping[str, Any] | None = None) -> str:
    """``report.html`` section of ``chaosfm bench chaos``: the per-system table, the medians over
    systems, the VPT plot, and the zero-shot comparison when there is one."""
    header = ("<tr><th>system</th><th>model</th><th>windows</th><th>mean VPT</th><th>95% CI</th>"
              f"<th>median VPT</th><th>VPT / {html.escape(reference)}</th><th>95% CI</th><th>sMAPE</th>"
              "<th>CRPS</th><th>coverage 80%</th></tr>")
    body = []
    for row in summary.itertuples():
        cap = systems[row.system]["vpt_cap"]
        body.append(
            f'<tr><td class="name">{html.escape(row.system)} (cap {cap:.1f})</td>'
            f'<td class="name">{html.escape(row.model)}</td><td>{row.windows}</td><td>{_fmt(row.vpt_mean)}</td>'
            f"<td>{_fmt(row.vpt_mean_low)} – {_fmt(row.vpt_mean_high)}</td><td>{_fmt(row.vpt_median)}</td>"
            f"<td>{_fmt(row.vpt_ratio)}</td><td>{_fmt(row.vpt_ratio_low)} – {_fmt(row.vpt_ratio_high)}</td>"
            f"<td>{_fmt(row.smape)}</td><td>{_fmt(row.crps)}</td><td>{_fmt(row.coverage_80)}</td></tr>"
        )
    medians = "".join(
        f'<tr><td class="name">{html.escape(row.model)}</td><td>{_fmt(row.median_system_vpt)}</td>'
        f"<td>{_fmt(row.median_system_ratio)}</td><td>{row.systems}</td></tr>"
        for row in overall.itertuples()
    )
    return f"""<h2>Chaotic systems: valid prediction time</h2>
<p class="note">Fresh windows of independent test trajectories (initial conditions the models never
saw, after each system's cutoff). VPT in Lyapunov times (threshold 0.4), capped at the horizon
(<i>cap</i>); intervals are bootstrap intervals over test trajectories, the ratio's paired.</p>
{_img(png, "mean VPT per system and model")}
<h3>Median over systems</h3>
<table><tr><th>model</th><th>median of mean VPT</th><th>median VPT / {html.escape(reference)}</th><th>systems</th></tr>
{medians}</table>
{_zero_shot_table(zero_shot, zero_info) if zero_shot is not None else ""}
<h3>Per system</h3>
<table>{header}{''.join(body)}</table>"""


def _zero_shot_table(table: pd.DataFrame, info: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="name">{html.escape(row.against)}</td><td>{row.systems}</td>'
        f"<td>{_fmt(row.zero_shot_median_vpt)}</td><td>{_fmt(row.their_median_vpt)}</td>"
        f"<td>{_fmt(row.median_difference)}</td><td>{_fmt(row.difference_low)} – {_fmt(row.difference_high)}</td>"
        f"<td>{row.zero_shot_better_on}</td></tr>"
        for row in table.itertuples()
    )
    seen = ", ".join(html.escape(n) for n in info["pretrained_on"])
    return f"""<h3>Zero-shot on systems it never saw</h3>
<p class="note">Pretrained on every row of {seen} (windows of those systems would be
<b>in_sample</b> even on new initial conditions, so they are not scored); scored on
{len(info["scored_on"])} systems it never saw, from their context alone (<b>fresh</b>).</p>
<table><tr><th>against</th><th>systems</th><th>zero_shot median VPT</th><th>their median VPT</th>
<th>median difference</th><th>95% CI</th><th>zero_shot better on</th></tr>{rows}</table>"""
