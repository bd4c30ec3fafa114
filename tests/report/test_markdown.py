"""Tests for chaosfm.report._markdown: the fresh comparison as markdown."""

from chaosfm.report import evaluation_markdown


def metrics(paired_models):
    return {"datasets": {"sp500": {
        "compared": {"fresh": {"n_windows": 3, "windows": {"garch": 3, "m": 4},
                               "models": {"garch": {"crps": 2.0, "coverage_80": 0.8}, "m": {"crps": 1.5, "coverage_80": 0.7}}}},
        "paired": {"fresh": {"reference": "garch", "block": 5, "models": paired_models}},
    }}}


def test_one_table_per_dataset_with_the_paired_difference():
    text = evaluation_markdown(metrics({"m": {"crps": {"value": -0.5, "ci_low": -0.9, "ci_high": -0.1, "n_windows": 3}}}))
    assert text.startswith("### sp500")
    assert "on the 3 every model scored" in text and "blocks of 5 windows" in text
    assert "| model | fresh windows | crps | coverage_80 | crps − garch [95% CI] |" in text
    assert "| `garch` | 3 | 2 | 0.8 | reference |" in text
    assert "| `m` | 4 | 1.5 | 0.7 | -0.5 [-0.9, -0.1] |" in text


def test_without_a_reference_there_is_no_paired_column():
    text = evaluation_markdown(metrics({}))
    assert "−" not in text and "| `m` | 4 | 1.5 | 0.7 |" in text


def test_a_dataset_with_several_assets_gets_a_table_per_asset():
    data = metrics({})
    entry = data["datasets"]["sp500"]
    entry["assets"] = {"x": {"compared": entry["compared"], "paired": entry["paired"]}}
    text = evaluation_markdown(data)
    assert text.count("### ") == 2 and "### sp500: x" in text
