"""What commands print: user text (file names, ``--out``, asset names, repair notes) exactly as typed,
never read as rich markup."""

import numpy as np
import pandas as pd

from chaosfm.cli import main


def write_market(path, n=120, negative_volume_row=None):
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
    frame = pd.DataFrame({
        "Date": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close, "Volume": 1000.0,
    })
    if negative_volume_row is not None:
        frame.loc[negative_volume_row, "Volume"] = -1.0
    frame.to_csv(path, index=False)
    return path


def test_names_with_brackets_print_as_typed(tmp_path, capsys):
    (tmp_path / "a[").mkdir()
    data = write_market(tmp_path / "a[" / "b]c.csv", negative_volume_row=5)
    assert main(["data", "check", "--repair", str(data)]) == 0
    printed = capsys.readouterr().out
    assert f"ok {data}: market data, 119 rows" in printed
    assert "  b]c: 119 rows" in printed
    assert "repaired: dropped 1 row(s) breaking [volume >= 0]" in printed

    data = write_market(tmp_path / "[bold]x.csv")
    out = tmp_path / "o[" / "b]x"
    assert main(["evaluate", "--data", str(data), "--models", "random_walk,last_value", "--horizon", "5",
                 "--num-samples", "8", "--max-windows", "2", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # long lines wrap at the console's width
    assert "[bold]x: scores on fresh windows" in printed
    assert f"wrote {out}/metrics.json and {out}/report.html" in printed
    assert (out / "metrics.json").is_file()
