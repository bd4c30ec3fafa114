"""Loading a user's CSV: ``chaosfm.data.load`` (read + validate) beside plain ``pandas.read_csv``.

A Yahoo-format daily OHLCV file (``Date,Open,High,Low,Close,Adj Close,Volume``) of a random walk
is written for each size (300 and 1,000,000 rows by default; business days from 1900 run out
before a million rows, so the big file is minute bars). Each load runs in a fresh subprocess, so
that its peak resident memory (``ru_maxrss``, which includes Python and the imports) is its own;
the baseline subprocess imports chaosfm's data layer too and then only calls
``pandas.read_csv(..., parse_dates=["Date"])`` — what a user would otherwise run, without the
checks. Rounds are interleaved and the median is printed, with the load average before and after
(the machine is shared).

Usage: ``python bench/load_rows.py [--rows 300,1000000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

_CHILD = r"""
import json, resource, sys, time
import pandas as pd
import chaosfm.data as data
path, how = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if how == "chaosfm":
    frame = data.load(path)
else:
    frame = pd.read_csv(path, parse_dates=["Date"])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "imports_mib": before / 1024, "rows": len(frame)}))
"""


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A valid Yahoo-format OHLCV file of ``rows`` rows (a geometric random walk)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.001 * rng.standard_normal(rows)))
    open_ = close * np.exp(0.0005 * rng.standard_normal(rows))
    high = np.maximum(open_, close) * (1 + 0.001 * rng.random(rows))
    low = np.minimum(open_, close) * (1 - 0.001 * rng.random(rows))
    freq = "B" if rows <= 20_000 else "min"
    frame = pd.DataFrame({
        "Date": pd.date_range("1990-01-01", periods=rows, freq=freq), "Open": open_, "High": high, "Low": low,
        "Close": close, "Adj Close": close, "Volume": rng.integers(1_000, 1_000_000, rows),
    })
    frame.to_csv(path, index=False, float_format="%.6f")


def _measure(path: Path, how: str) -> dict[str, float]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CHAOSFM_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{how} on {path} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="300,1000000", help="file sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(part) for part in args.rows.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = Path(tmp) / f"ohlcv_{rows}.csv"
            write_csv(path, rows)
            runs = {"chaosfm": [], "pandas": []}
            for _ in range(args.rounds):
                for how in runs:  # interleaved: both see the same machine load
                    runs[how].append(_measure(path, how))
            median = {how: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for how, rs in runs.items()}
            assert median["chaosfm"]["rows"] == median["pandas"]["rows"] == rows
            table.append((rows, path.stat().st_size / 2**20, median))
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| rows | file MiB | chaosfm.data.load s | pandas.read_csv s | ratio | chaosfm peak MiB | pandas peak MiB"
          " | imports MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, mib, m in table:
        c, p = m["chaosfm"], m["pandas"]
        print(f"| {rows:,} | {mib:.1f} | {c['seconds']:.3f} | {p['seconds']:.3f} | {c['seconds'] / p['seconds']:.2f}"
              f" | {c['peak_mib']:.0f} | {p['peak_mib']:.0f} | {c['imports_mib']:.0f} |")
    print(json.dumps({str(rows): m for rows, _, m in table}))


if __name__ == "__main__":
    main()
