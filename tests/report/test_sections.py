"""``report.html`` of an evaluation: a part without data is one line saying why, never a table of
dashes; the score over time is relative to the random walk; a fan chart per asset; a glossary."""

from html.parser import HTMLParser

import numpy as np
import pandas as pd

from chaosfm.evaluate import Protocol, Results
from chaosfm.report import dataset_section, write_report

DASH = "–"


class _Tables(HTMLParser):
    """Every ``<table>`` of a document as rows of cell texts, and every ``<img>``'s alt text."""

    def __init__(self):
        super().__init__()
        self.tables, self.alts, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.alts.append(dict(attrs)["alt"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(document: str) -> _Tables:
    parser = _Tables()
    parser.feed(document)
    return parser


def test_a_baselines_only_report_omits_the_empty_classes_and_says_why(evaluated):
    out, metrics = evaluated
    document = (out / "report.html").read_text()
    (entry,) = metrics["datasets"].values()
    # Baselines have no upstream artifact: no window is within_pretrain, so no gap is estimable.
    assert all(m["within_pretrain"]["n_windows"] == 0 for m in entry["models"].values())
    assert "No within_pretrain windows: no upstream artifact" in document
    assert "No leakage gap (fresh − within_pretrain): it needs two or more windows" in document
    assert "Scores: within_pretrain" not in document and "Leakage gap (fresh" not in document
    tables = parse(document).tables
    assert tables
    for table in tables:
        body = [cell for row in table[1:] for cell in row[1:]]
        assert any(cell != DASH for cell in body), table
    fresh = next(t for t in tables if t[0][:2] == ["model", "windows"])
    assert [row[0] for row in fresh[1:]] == ["random_walk", "last_value", "ar"]


def _scores() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A frame of one asset and hand-made scores: ``tok`` has four within_pretrain windows (crps 1-4)
    and four fresh ones (crps 5-8); random_walk scored the fresh ones; mase is NaN everywhere."""
    stamps = pd.date_range("2020-01-01", periods=60, freq="D")
    frame = pd.DataFrame({"asset": "X", "timestamp": stamps, "open": 100.0, "high": 101.0, "low": 99.0,
                          "close": np.linspace(100, 110, 60), "volume": 1.0})
    rows = [("tok", stamps[30 + i], "within_pretrain", 1.0 + i) for i in range(4)]
    rows += [("tok", stamps[40 + i], "fresh", 5.0 + i) for i in range(4)]
    rows += [("random_walk", stamps[40 + i], "fresh", 10.0 + i) for i in range(4)]
    scores = pd.DataFrame(rows, columns=["model", "origin", "window_class", "crps"]).assign(asset="X", mase=np.nan)
    return frame, scores[["model", "asset", "origin", "window_class", "crps", "mase"]]


def _results(scores: pd.DataFrame) -> Results:
    return Results(dataset="X", kind="market", protocol=Protocol(horizon=2, n_bootstrap=200), scores=scores,
                   metric_names=["crps", "mase"], models=list(dict.fromkeys(scores["model"])),
                   cutoff=pd.Timestamp("2020-01-25"))


def test_a_class_with_windows_is_a_table_and_a_score_without_values_is_named_not_dashed():
    frame, scores = _scores()
    section = dataset_section("X", frame, _results(scores), ["close"])
    assert "Scores: within_pretrain, on the 4 windows every model scored" in section
    parsed = parse(section)
    within = parsed.tables[1]  # fresh, then within_pretrain
    assert within[0] == ["model", "windows", "crps"]  # mase (NaN on every window) is not a column of dashes
    assert within[1:] == [["tok", "4", "2.5"]]  # the mean of 1, 2, 3, 4; random_walk has none of them
    assert "windows differ (tok 4, random_walk 0)" in section
    assert "Not shown, no value on these windows: mase" in section
    # The gap of tok is mean(5..8) - mean(1..4) = 4; random_walk has no within_pretrain window.
    gap = next(t for t in parsed.tables if t[0] == ["model", "crps"])
    assert [row[0] for row in gap[1:]] == ["tok"] and gap[1][1].startswith("4[")
    assert "Not estimable for any score, so not shown: random_walk" in section
    assert "No in_sample windows: no model was scored on rows it was fitted on." in section
    assert "No fan chart: the forecasts were not kept" in section


def test_the_score_over_time_is_relative_to_the_random_walk_or_says_why_not():
    frame, scores = _scores()
    relative = dataset_section("X", frame, _results(scores), ["close"])
    assert "crps relative to random_walk over time" in relative and "below 1 beats the random walk" in relative
    without = scores[scores["model"] != "random_walk"]
    raw = dataset_section("X", frame, _results(without), ["close"])
    assert "crps per window over time" in raw
    assert "Raw crps, rolling mean over 5 origins: no random_walk was scored (add it to --models)" in raw


def test_the_report_has_a_fan_chart_per_asset_and_a_glossary_of_what_it_shows(evaluated):
    out, _ = evaluated
    document = (out / "report.html").read_text()
    parsed = parse(document)
    assert [a for a in parsed.alts if a.startswith("fan chart")] == ["fan chart: AAA", "fan chart: BBB"]
    assert '<section id="glossary">' in document
    glossary = document[document.index('<section id="glossary">'):]
    for name in ("in_sample", "within_pretrain", "fresh", "embargo", "leakage gap"):
        assert f"<dt>{name}</dt>" in glossary
    # Every score a table shows links to its glossary row, and the row states its unit.
    rows = {row[0]: row for row in parse(glossary).tables[0][1:]}
    assert set(rows) == {"crps", "mase", "coverage_80", "coverage_50", "wql", "smape", "rmse", "mae",
                         "directional_accuracy"}
    assert "price units" in rows["crps"][2] and rows["mase"][2].startswith("unitless")
    assert rows["coverage_80"][2] == "fraction of values (nominal 0.8)"
    for name in rows:
        assert f'href="#glossary-{name}"' in document and f'id="glossary-{name}"' in glossary


def test_write_report_ends_with_the_glossary_of_the_scores_it_links(tmp_path):
    frame, scores = _scores()
    path = write_report(tmp_path / "report.html", "t", [dataset_section("X", frame, _results(scores), ["close"])])
    glossary = path.read_text().split('<section id="glossary">')[1]
    rows = parse(glossary).tables[0]
    assert [row[0] for row in rows[1:]] == ["crps"]  # mase is shown nowhere, so it is not defined
