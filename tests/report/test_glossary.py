"""The glossary defines every score the evaluator can compute, with its unit, and only those a
report's tables link."""

import pytest

from chaosfm.evaluate import SCORES
from chaosfm.report import WINDOW_CLASSES, glossary_section, term


def _rows(section: str) -> dict[str, str]:
    """``{score: its row's html}`` of a glossary section."""
    return {part.split('"', 1)[0]: part for part in section.split('<tr id="glossary-')[1:]}


def test_every_score_the_evaluator_computes_has_a_meaning_and_a_unit():
    document = "".join(term(name) for name in [*SCORES, "vpt_x0"])
    rows = _rows(glossary_section(document))
    assert set(rows) == {*SCORES, "vpt_x0"}
    assert "Lyapunov times" in rows["valid_prediction_time"] and "Lyapunov times" in rows["vpt_x0"]
    assert "column x0 alone" in rows["vpt_x0"]
    assert "percent, 0 to 200" in rows["smape"] and "fraction of values (nominal 0.5)" in rows["coverage_50"]
    assert set(WINDOW_CLASSES) == {"in_sample", "within_pretrain", "fresh", "embargo", "leakage gap"}


def test_the_glossary_defines_only_the_linked_scores_and_refuses_an_unknown_one():
    section = glossary_section(f"<th>{term('crps', 'CRPS')}</th><th>mase</th>")
    assert list(_rows(section)) == ["crps"]
    assert "<dt>fresh</dt>" in section
    assert "<h3>Scores</h3>" not in glossary_section("<p>no table</p>")
    with pytest.raises(KeyError, match="score 'sharpe' has no glossary entry"):
        glossary_section(term("sharpe"))
