"""The README's "own CSV" commands run as written on a generated file, its links resolve to files
in the repository, and it stays a guide (under 400 lines)."""

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chaosfm.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _own_csv_commands() -> list[list[str]]:
    """The ``chaosfm`` lines of the first bash block of the "## Your own CSV" section, as argv lists."""
    section = README.read_text().split("\n## Your own CSV", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("chaosfm ")]


def _yahoo_export(path: Path, rows: int = 320) -> None:
    """Daily candles of a geometric random walk, in the columns a Yahoo export has."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.004, rows)) * close
    pd.DataFrame({
        "Date": pd.bdate_range("2020-01-01", periods=rows).strftime("%Y-%m-%d"),
        "Open": open_, "High": np.maximum(open_, close) + spread, "Low": np.minimum(open_, close) - spread,
        "Close": close, "Adj Close": close, "Volume": rng.integers(1_000, 5_000, rows),
    }).to_csv(path, index=False)


@pytest.mark.slow
def test_the_readme_own_csv_commands_run_as_written(tmp_path, monkeypatch):
    commands = _own_csv_commands()
    assert [argv[0] for argv in commands] == ["data", "evaluate", "backtest", "forecast"]
    monkeypatch.chdir(tmp_path)
    _yahoo_export(tmp_path / "prices.csv")
    for argv in commands:
        assert main(argv) == 0, argv
    assert {"metrics.json", "scores.parquet", "forecasts.parquet", "report.html"} <= {
        p.name for p in (tmp_path / "runs" / "mine").iterdir()}
    assert (tmp_path / "runs" / "mine-bt" / "metrics.json").exists()
    forecast = pd.read_csv(tmp_path / "runs" / "fc.csv")
    assert len(forecast) == 5 and {"mean", "0.1", "0.5", "0.9"} <= set(forecast.columns)


def test_the_readme_is_a_guide_whose_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) < 400
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not t.startswith(("http://", "https://", "mailto:"))]
    assert local, "no links found"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []
