"""Cold vs warm start of ``chaosfm stream``: time from process start to the first prediction.

Each round makes a new empty compilation cache directory and runs, each in a fresh subprocess,

- ``cold``: ``chaosfm stream --data - --cache-dir DIR`` on the empty cache (everything is traced,
  exported and compiled);
- ``warm``: the same command again on the cache the cold run filled (what a restart sees: the
  programs' exports are loaded instead of traced, their executables instead of compiled);
- ``no cache``: ``--no-compilation-cache``, the reference without this feature (it traces and
  compiles every time, like ``cold`` but without writing anything);

feeding each the first ``--length`` closes of the built-in ``sp500`` on stdin, as a live feed
would. "First prediction" is the wall time from ``Popen`` to the first prediction line on stdout
(the second observation: the first only initialises the state), so Python and JAX imports,
config, cache, warm-up pass and the first step are all in it. ``startup_seconds`` and
``first_step_ms`` are what the run wrote to metrics.json (``run_stream`` entry to ready; the first
step); ``programs`` how the run made its programs (metrics.json: traced, exported or loaded).
The predictions of the three runs are compared: a loaded export and a cached executable must
predict what a fresh trace and compile do. The machine is shared: rounds are interleaved, the
median round's ratio is printed, and the load average before and after.

Each round also times the floor: a fresh interpreter that imports JAX and computes one array
(:data:`FLOOR`). What a warm start spends above it is chaosfm's: its imports, config, loading
the programs and the first step.

Usage: ``python bench/warm_start.py [--rounds 2] [--length 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _feed(length: int) -> str:
    from chaosfm.data import load

    frame = load("sp500")
    closes = frame[frame["asset"] == frame["asset"].iloc[0]]["close"].to_numpy()[:length]
    return "close\n" + "".join(f"{v:.6f}\n" for v in closes)


def _run(feed: str, out: Path, cache: Path | None) -> dict[str, float]:
    command = [sys.executable, "-m", "chaosfm.cli", "stream", "--data", "-", "--out", str(out)]
    command += ["--cache-dir", str(cache)] if cache is not None else ["--no-compilation-cache"]
    env = {**os.environ, "CHAOSFM_PROGRESS": "0"}
    begin = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    process.stdin.write(feed)
    process.stdin.close()
    first_line = process.stdout.readline()
    first = time.perf_counter() - begin
    rest = process.stdout.read()
    error = process.stderr.read()
    if process.wait() != 0 or not first_line:
        raise RuntimeError(f"{' '.join(command)} failed:\n{error}")
    total = time.perf_counter() - begin
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(rest.splitlines()) + 1 == len(feed.splitlines()) - 2  # one line per prediction
    programs = sorted(set(metrics["programs"].values()))
    return {"first": first, "startup": metrics["startup_seconds"], "first_step": metrics["first_step_ms"],
            "total": total, "programs": "+".join(programs)}


FLOOR = "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
"""What any JAX program pays before its first result: the interpreter, ``import jax`` and the CPU
client. A warm stream cannot start faster than this."""


def _floor() -> float:
    """Seconds from ``Popen`` to the exit of a fresh interpreter that runs :data:`FLOOR`."""
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], check=True)
    return time.perf_counter() - begin


def _size(folder: Path) -> tuple[int, float]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--length", type=int, default=200, help="sp500 closes fed on stdin")
    options = parser.parse_args()
    feed = _feed(options.length)
    load_before = os.getloadavg()
    rows, ratios, identical, floors = [], [], [], []
    for round_ in range(1, options.rounds + 1):
        floors.append(_floor())
        with tempfile.TemporaryDirectory(prefix="chaosfm-warm-") as temp:
            temp = Path(temp)
            cache = temp / "cache"
            for name, directory in (("cold", cache), ("warm", cache), ("no cache", None)):
                result = _run(feed, temp / name.replace(" ", "_"), directory)
                rows.append((round_, name, result))
            cold, warm = rows[-3][2], rows[-2][2]
            ratios.append(cold["first"] / warm["first"])
            predictions = [(temp / run / "predictions.csv").read_bytes() for run in ("cold", "warm", "no_cache")]
            identical.append(predictions[0] == predictions[1] == predictions[2])
            everything, exports = _size(cache), _size(cache / "exports")
            executables = (everything[0] - exports[0], everything[1] - exports[1])
    print(f"chaosfm stream --data - (sp500, {options.length} closes), each run a fresh process; cache: "
          f"{executables[0]} executables, {executables[1]:.1f} MB; {exports[0]} exports, {exports[1]:.1f} MB")
    print(f"{'round':>5} {'run':<9} {'first prediction s':>19} {'startup_seconds':>16} {'first_step_ms':>14} "
          f"{'total s':>8}  programs")
    for round_, name, r in rows:
        print(f"{round_:>5} {name:<9} {r['first']:>19.2f} {r['startup']:>16.2f} {r['first_step']:>14.2f} "
              f"{r['total']:>8.2f}  {r['programs']}")
    print(f"cold / warm time to first prediction: median {np.median(ratios):.1f}x "
          f"(rounds: {', '.join(f'{r:.1f}x' for r in ratios)}); "
          f"cold, warm and no-cache predictions identical: {all(identical)}")
    above = [warm["first"] - floor for (_, _, warm), floor in zip(rows[1::3], floors)]
    print(f"floor (python -c '{FLOOR}'): {', '.join(f'{f:.2f}' for f in floors)} s; warm runs' first "
          f"prediction minus the floor: {', '.join(f'{a:.2f}' for a in above)} s")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
