"""Tokenizer benchmark: health and encode speed of FSQ, VQ-VAE and bins, side by side, in one run.

Each tokenizer is fitted with ``chaosfm.jobs.tokenize.run`` (exactly what ``chaosfm tokenize``
does) on the rows of each asset before its cutoff (default: 80% of its rows) and measured on the
rows after it. Reconstruction is reported as the ratio of its RMSE to that of predicting the
training mean (per feature, in feature units), and encode speed also as a ratio to uniform bins
(Chronos-style, the tokenizer a user would otherwise pick), all measured in this run on this
machine. Speed is measured on every built-in market dataset, after compilation:

- ``from frame``: ``tokenizer.encode(frame)``, pandas feature computation included;
- ``model only``: ``tokenizer.encode_series`` on prepared per-asset arrays.

Usage:
    python bench/tokenizers.py                      # full: 2000 steps per neural tokenizer
    python bench/tokenizers.py --steps 50 --quick   # smoke run
    python bench/tokenizers.py --only fsq --out runs/bench-tokenizers

Done-when targets of issue 3 are printed under the table with a pass/fail verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CHAOSFM_PROGRESS", "0")

import pandas as pd  # noqa: E402

from chaosfm._artifacts import machine  # noqa: E402
from chaosfm.data import load  # noqa: E402
from chaosfm.jobs.tokenize import TokenizeConfig  # noqa: E402
from chaosfm.jobs.tokenize import run as run_tokenize  # noqa: E402
from chaosfm.tokenizers import encode_throughput, load_tokenizer  # noqa: E402

TRAIN_DATA = "sp500,nasdaq,ndx,n225"
SPEED_DATA = "sp500,nasdaq,ndx,n225,jkse"

ROWS = {
    "fsq": dict(tokenizer="fsq", levels=[8, 8, 4, 4]),
    "vqvae": dict(tokenizer="vqvae", codebook=512, restarts=True),
    "vqvae-no-restarts": dict(tokenizer="vqvae", codebook=512, restarts=False),
    "bins-uniform": dict(tokenizer="bins", bins="uniform"),
    "bins-quantile": dict(tokenizer="bins", bins="quantile"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per neural tokenizer")
    parser.add_argument("--data", default=TRAIN_DATA, help="datasets to fit and score on")
    parser.add_argument("--speed-data", default=SPEED_DATA, help="datasets to time encoding on")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7, help="timed encoding runs (median)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tokenizers"), help="run folders go here")
    parser.add_argument("--quick", action="store_true", help="smoke run: skip the Done-when verdict")
    parser.add_argument("--speed-only", action="store_true",
                        help="re-time the tokenizers already saved under --out (no fitting)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")

    speed_frame = load(args.speed_data)
    results = {}
    for name in names:
        started = time.perf_counter()
        if args.speed_only:
            metrics = json.loads((args.out / name / "metrics.json").read_text())
        else:
            config = TokenizeConfig(
                data=args.data, steps=args.steps, seed=args.seed, out=args.out / name,
                speed_repeats=1, **ROWS[name],
            )
            metrics = run_tokenize(config)
        results[name] = metrics
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    # Time every tokenizer after all fitting is done, back to back, so they share the machine's
    # load; the load average is printed beside the numbers (this machine is shared).
    load_before = os.getloadavg()
    for name, metrics in results.items():
        metrics["speed"] = _speed(load_tokenizer(args.out / name), speed_frame, args.repeats)
    load_after = os.getloadavg()

    table = pd.DataFrame([_row(name, m, results) for name, m in results.items()]).set_index("tokenizer")
    print(f"\nTokenizer health on {args.data} (fit before each asset's 80% cutoff, scored after), "
          f"speed on {args.speed_data} ({len(speed_frame):,} candles)")
    print(f"machine: {machine()}; steps per neural tokenizer: {args.steps}")
    print(f"1-minute load average while timing: {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"(2 cores); rows/s is the median of {args.repeats} runs after compilation, best run in "
          "brackets\n")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(float_format=lambda v: f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"))
    print("\nreconstruction RMSE / training-mean RMSE on held-out rows, per feature:")
    for name, m in results.items():
        held = m["reconstruction"]["held_out"] or {}
        cells = ", ".join(f"{k} {v['ratio']:.3f}" for k, v in held.items() if v["ratio"] is not None)
        print(f"  {name}: {cells}")
    if not args.quick:
        _verdict(results)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {name: {k: v for k, v in m.items()} for name, m in results.items()}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nper-tokenizer run folders and summary.json in {args.out}")
    return 0


def _speed(tokenizer, frame, repeats: int) -> dict[str, float]:
    """Median (as encode_throughput) and best of ``repeats`` timed runs."""
    prepared = [values for _, _, values in tokenizer.series(frame)]
    median = encode_throughput(tokenizer, frame, repeats)
    best_frame = best_series = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        tokenizer.encode(frame)
        best_frame = max(best_frame, len(frame) / (time.perf_counter() - started))
        started = time.perf_counter()
        for values in prepared:
            tokenizer.encode_series(values)
        best_series = max(best_series, len(frame) / (time.perf_counter() - started))
    return {**median, "best_from_frame": best_frame, "best_from_series": best_series}


def _worst_ratio(metrics: dict) -> float | None:
    held = metrics["reconstruction"]["held_out"] or {}
    ratios = [v["ratio"] for v in held.values() if v["ratio"] is not None]
    return max(ratios) if ratios else None


def _row(name: str, m: dict, results: dict) -> dict:
    reference = results.get("bins-uniform", {}).get("speed", {}).get("from_frame")
    return {
        "tokenizer": name,
        "vocab": m["vocab_size"],
        "usage train": m["codebook_usage"]["train"],
        "usage held-out": m["codebook_usage"]["held_out"],
        "ppl train": m["perplexity"]["train"],
        "ppl held-out": m["perplexity"]["held_out"],
        "dead": m["dead_codes"],
        "restarts": m.get("restarts_done"),
        "worst rmse ratio": _worst_ratio(m),
        "rows/s frame": m["speed"]["from_frame"],
        "(best)": m["speed"]["best_from_frame"],
        "rows/s model": m["speed"]["from_series"],
        "(best) ": m["speed"]["best_from_series"],
        "speed vs bins": (m["speed"]["from_frame"] / reference) if reference else None,
        "fit s": m["fit_seconds"],
    }


def _verdict(results: dict) -> None:
    checks = []  # (label, measured value, ">=" or "<", threshold)
    if "fsq" in results:
        m = results["fsq"]
        checks += [
            ("FSQ 1024 codes: held-out usage >= 0.5", m["codebook_usage"]["held_out"], ">=", 0.5),
            ("FSQ 1024 codes: train usage >= 0.8", m["codebook_usage"]["train"], ">=", 0.8),
            ("FSQ: worst held-out RMSE ratio < 0.5", _worst_ratio(m), "<", 0.5),
            ("FSQ: encode >= 500,000 candles/s (model only, median)", m["speed"]["from_series"], ">=", 5e5),
            ("FSQ: encode >= 500,000 candles/s (from a frame, median)", m["speed"]["from_frame"], ">=", 5e5),
        ]
    if "vqvae" in results:
        m = results["vqvae"]
        checks += [
            ("VQ-VAE 512 with restarts: train usage >= 0.5", m["codebook_usage"]["train"], ">=", 0.5),
            ("VQ-VAE: worst held-out RMSE ratio < 0.5", _worst_ratio(m), "<", 0.5),
        ]
    if "vqvae-no-restarts" in results:
        m = results["vqvae-no-restarts"]
        print(f"\nVQ-VAE 512 without restarts: train usage {m['codebook_usage']['train']:.3f}, "
              f"held-out {m['codebook_usage']['held_out']:.3f} (shown for comparison)")
    print("\nDone-when checks (issue 3):")
    for label, value, op, threshold in checks:
        ok = value is not None and (value >= threshold if op == ">=" else value < threshold)
        shown = "n/a" if value is None else (f"{value:,.0f}" if value >= 100 else f"{value:.3f}")
        print(f"  [{'pass' if ok else 'FAIL'}] {label}: measured {shown}")

if __name__ == "__main__":
    sys.exit(main())
