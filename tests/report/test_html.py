"""The report says which windows a table compares models on, and names the models whose windows differ."""

from chaosfm.report import compared_heading, windows_differ


def test_a_table_over_shared_windows_says_so_and_names_differing_models():
    same = {"n_windows": 6, "windows": {"a": 6, "b": 6}, "models": {}}
    assert compared_heading(same) == "on the 6 windows every model scored" and windows_differ(same) == ""
    differ = {"n_windows": 4, "windows": {"a": 6, "gpt": 4, "jepa": 0}, "models": {}}
    sentence = windows_differ(differ)
    assert "a 6, gpt 4, jepa 0" in sentence and "over the 4 they all scored" in sentence
    assert compared_heading({"n_windows": 0, "windows": {"a": 0}, "models": {}}) == "no window"
    assert compared_heading({"n_windows": 1, "windows": {"a": 1}, "models": {}}) == "on the 1 window every model scored"
