"""The report's glossary: the window classes of the leakage protocol and every score a table shows,
each with its unit.

A table header names a score with :func:`term`, a link to its entry; :func:`glossary_section`
defines exactly the scores a document links, so the glossary never lists a score the reader
cannot see and never misses one a table shows.
"""

from __future__ import annotations

import html
import re

from chaosfm.evaluate import is_vpt

WINDOW_CLASSES = {
    "in_sample": "the model itself was fitted on a timestamp of the window's targets: a score of "
                 "fit, not of forecasting.",
    "within_pretrain": "the model was not fitted on the window, but an upstream artifact it is built on "
                       "(a tokenizer, a pretrained encoder) saw it. Baselines have no upstream artifact, "
                       "so they never have such windows.",
    "fresh": "nothing upstream saw the window, and it starts at least the embargo after the last "
             "timestamp anything saw: the only out-of-sample score.",
    "embargo": "the observations right after the last one anything saw. A window starting there is "
               "neither fresh nor seen, and is not scored (a label or feature near the cutoff may "
               "still carry what was seen).",
    "leakage gap": "fresh − within_pretrain, per score and model, with a 95% bootstrap interval. "
                   "For a loss a positive gap (for a higher-is-better score a negative one) means "
                   "the model does worse on fresh data than on what its upstream artifacts saw: a sign of "
                   "leakage. It needs two or more windows of both classes.",
}
"""Window class -> what it means (DESIGN.md, TimeFence)."""

METRICS = {
    "crps": ("continuous ranked probability score of the sample paths, averaged over steps and "
             "columns (lower is better)", "the series' units: price units on market data"),
    "crps_pct": ("CRPS of the first column divided by its last observed value",
                 "percent of the last value"),
    "wql": ("weighted quantile loss at the protocol's quantile levels, pooled over steps and "
            "columns (GluonTS, Chronos; lower is better)", "unitless (0 is perfect)"),
    "mase": ("mean absolute error of the point forecast over the in-sample seasonal-naive error of "
             "the history before the window (Hyndman & Koehler 2006)", "unitless (1 is the naive forecast)"),
    "coverage_80": ("share of observed values inside the forecast's central 80% interval, averaged "
                    "over windows; the best is the nominal 0.8, not the highest",
                    "fraction of values (nominal 0.8)"),
    "coverage_50": ("share of observed values inside the forecast's central 50% interval, averaged "
                    "over windows; the best is the nominal 0.5", "fraction of values (nominal 0.5)"),
    "smape": ("symmetric mean absolute percentage error of the point forecast (M4)", "percent, 0 to 200"),
    "rmse": ("root mean squared error of the point forecast", "the series' units"),
    "mae": ("mean absolute error of the point forecast", "the series' units"),
    "directional_accuracy": ("share of steps whose forecast moves from the last observed value in the "
                             "direction the series moved (higher is better)", "fraction of steps (0.5 is a coin)"),
    "valid_prediction_time": ("time until the point forecast's error, over the attractor's spread in the "
                              "history, first exceeds the threshold, all columns together (higher is better)",
                              "Lyapunov times (time × largest Lyapunov exponent)"),
    "long_short_return": ("log return of holding the sign of (median at the horizon − last value) for the "
                          "window (higher is better)", "log return per window"),
}
"""Score -> (what it measures, its unit); ``vpt_<column>`` is described by :func:`_metric_entry`."""

_LINK = re.compile(r'href="#glossary-([A-Za-z0-9_.\-]+)"')


def term(name: str, label: str | None = None) -> str:
    """A table header's text naming score ``name``, linked to its glossary entry (``label`` shown)."""
    return f'<a href="#glossary-{html.escape(name)}">{html.escape(label or name)}</a>'


def _metric_entry(name: str) -> tuple[str, str]:
    """``(meaning, unit)`` of score ``name``.

    Raises:
        KeyError: a score the glossary does not define (add it to ``METRICS``).
    """
    if name in METRICS:
        return METRICS[name]
    if is_vpt(name):  # vpt_<column>, a channel's own VPT
        column = name.split("_", 1)[1]
        unit = METRICS["valid_prediction_time"][1]
        return f"valid prediction time of column {column} alone (its own error over its own spread)", unit
    raise KeyError(f"score {name!r} has no glossary entry: add its meaning and unit to "
                   f"chaosfm.report._glossary.METRICS")


def linked_terms(document: str) -> list[str]:
    """The scores ``document`` links with :func:`term`, in order of first appearance."""
    return list(dict.fromkeys(html.unescape(m) for m in _LINK.findall(document)))


def glossary_section(document: str) -> str:
    """The glossary of a report whose body is ``document``: the window classes, and every score its
    tables link with :func:`term` (meaning and unit)."""
    classes = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>"
                      for name, text in WINDOW_CLASSES.items())
    rows = []
    for name in linked_terms(document):
        meaning, unit = _metric_entry(name)
        rows.append(f'<tr id="glossary-{html.escape(name)}"><td class="name">{html.escape(name)}</td>'
                    f'<td class="text">{html.escape(meaning)}</td><td class="text">{html.escape(unit)}</td></tr>')
    metrics = ('<h3>Scores</h3><table><tr><th class="text">score</th><th class="text">what it measures</th>'
               '<th class="text">unit</th></tr>'
               f"{''.join(rows)}</table>") if rows else ""
    return (f'<section id="glossary"><h2>Glossary</h2><h3>Window classes</h3><dl>{classes}</dl>'
            f"{metrics}</section>")
