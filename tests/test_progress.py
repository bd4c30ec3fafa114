"""The progress hooks: a first step that compiles is announced, once, and only when progress is shown."""

from chaosfm._progress import COMPILING, compiling, progress


def test_the_first_item_note_comes_before_its_work_and_only_once(capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    seen = []
    for item in progress(range(3), "fit", first=COMPILING):
        seen.append((item, capsys.readouterr().err.strip()))  # what stderr got before this item's work
    assert seen == [(0, f"fit: {COMPILING}"), (1, ""), (2, "")]
    assert list(progress(range(2), "fit")) == [0, 1] and "compiling" not in capsys.readouterr().err


def test_a_compiling_block_is_announced_when_progress_is_shown(capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    with compiling("the online predictor"):
        assert capsys.readouterr().err.strip() == f"the online predictor: {COMPILING}"
    monkeypatch.setenv("CHAOSFM_PROGRESS", "0")
    with compiling("the online predictor"):
        pass
    assert capsys.readouterr().err == ""


def test_the_note_is_silent_when_progress_is_off_or_quiet(capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_PROGRESS", "0")
    assert list(progress(range(2), "fit", first=COMPILING)) == [0, 1]
    monkeypatch.setenv("CHAOSFM_PROGRESS", "1")
    monkeypatch.setenv("CHAOSFM_QUIET", "1")
    assert list(progress(range(2), "fit", first=COMPILING)) == [0, 1]
    assert "compiling" not in capsys.readouterr().err
