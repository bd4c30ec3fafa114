"""The ``report.html`` section of ``chaosfm bench chaos``: valid prediction time per chaotic system
and model, the medians over systems, and the zero-shot comparison."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from chaosfm.report._glossary import term
from chaosfm.report._html import _fmt, _img


def chaos_bench_section(summary: pd.DataFrame, overall: pd.DataFrame, systems: Mapping[str, Mapping[str, Any]],
                        reference: str, png: bytes, zero_shot: pd.DataFrame | None = None,
                        zero_info: Mapping[str, Any] | None = None) -> str:
    """``report.html`` section of ``chaosfm bench chaos``: the per-system table, the medians over
    systems, the VPT plot, and the zero-shot comparison when there is one."""
    vpt = "valid_prediction_time"
    header = (f"<tr><th>system</th><th>model</th><th>windows</th><th>{term(vpt, 'mean VPT')}</th><th>95% CI</th>"
              f"<th>median VPT</th><th>VPT / {html.escape(reference)}</th><th>95% CI</th><th>{term('smape', 'sMAPE')}</th>"
              f"<th>{term('crps', 'CRPS')}</th><th>{term('coverage_80', 'coverage 80%')}</th></tr>")
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
