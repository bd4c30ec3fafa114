"""The README's Python example runs as written and says what it claims."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    """The first ``python`` code block of the README's "## Python" section."""
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "README.md: no python block in the Python section"
    return blocks[0]


def test_the_readme_forecaster_example_runs_and_forecasts_five_business_days():
    code = _python_example()
    assert "chaosfm.Forecaster.from_name(\"garch\")" in code and len(code.splitlines()) <= 12
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    fc, df = namespace["fc"], namespace["df"]
    assert list(fc.columns) == ["unique_id", "ds", "mean", "0.1", "0.5", "0.9"]
    last = df["ds"].iloc[-1]
    assert list(fc["ds"]) == list(pd.bdate_range(last + pd.Timedelta(days=1), periods=5))
    q = fc[["0.1", "0.5", "0.9"]].to_numpy()
    assert np.all(np.diff(q, axis=1) > 0)
    # A GARCH forecast of the index a week out stays within a tenth of the last close.
    assert np.all(np.abs(fc["mean"] / df["y"].iloc[-1] - 1) < 0.1)
    assert "unique_id" in printed.getvalue() and "0.9" in printed.getvalue()
