"""ACI's step size, chosen on rows before the cutoffs: how often 150-window blocks land in band.

    python bench/aci_step_size.py [--gammas 0.005 0.02 0.05 0.1] [--out runs/aci-step-size]
    python bench/aci_step_size.py --analyse-only runs/aci-step-size

The coverage goal of the markets issue is realised coverage within 0.77-0.83 (80% interval) and
0.47-0.53 (50%) over a fresh period of at least 150 windows. Which step size of adaptive conformal
inference gets there is chosen without touching a fresh row: each built-in market is cut to its
first 80% of rows (everything before its real cutoff), `chaosfm evaluate` fits the six baselines
on the first 80% of *that* and scores every later origin (horizon 5, one row apart) raw, `+aci` at
each step size and `+agaci` (its default grid). The scored windows are split into consecutive
blocks of 150 (jkse's 143 as one block), and the table counts the blocks whose two coverages are
both in band, with the mean CRPS of each calibrated copy relative to `+agaci`'s on the same
(market, model). About 10 minutes per step size on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("CHAOSFM_PROGRESS", "0")

MARKETS = ("sp500", "nasdaq", "ndx", "n225", "jkse")
MODELS = ("random_walk", "garch", "har_rv", "ar", "context_parroting", "last_value")
BLOCK = 150
BANDS = {"coverage_80": (0.77, 0.83), "coverage_50": (0.47, 0.53)}


def before_cutoffs(folder: Path) -> list[str]:
    """Each market's rows up to its real cutoff (the first 80%), as CSV files a user would pass."""
    from chaosfm.data import load

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in MARKETS:
        frame = load(name)
        path = folder / f"{name}.csv"
        frame.iloc[: int(0.8 * len(frame))].to_csv(path, index=False)
        paths.append(str(path))
    return paths


def evaluate(paths: list[str], gamma: float, out: Path, agaci: bool) -> None:
    from chaosfm.cli import main

    config = {
        "datasets": [{"name": p} for p in paths],
        "models": list(MODELS),
        "calibrate": ["aci", "agaci"] if agaci else ["aci"],
        "calibration": {"gamma": gamma},
        "protocol": {"horizon": 5, "step": 1, "num_samples": 100, "score_in_sample": False},
        "out": str(out),
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    if main(["evaluate", "--config", str(path)]) != 0:
        raise SystemExit(f"chaosfm evaluate --config {path} failed")


def blocks(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (copy, market, model, block of 150 consecutive fresh windows)."""
    rows = []
    for (dataset, model), group in scores.groupby(["dataset", "model"]):
        group = group.sort_values("origin")
        starts = range(0, len(group) - BLOCK + 1, BLOCK) if len(group) >= BLOCK else [0]
        for start in starts:
            block = group.iloc[start:start + BLOCK] if len(group) >= BLOCK else group
            coverage = {name: block[name].mean() for name in BANDS}
            rows.append({"dataset": dataset, "model": model, "windows": len(block), **coverage,
                         "in_band": all(lo <= coverage[n] <= hi for n, (lo, hi) in BANDS.items())})
    return pd.DataFrame(rows)


def analyse(out: Path) -> pd.DataFrame:
    frames = []
    for folder in sorted(out.glob("gamma-*")):
        gamma = folder.name.removeprefix("gamma-")
        scores = pd.read_parquet(folder / "scores.parquet")
        scores = scores[(scores.window_class == "fresh") & scores.model.str.contains(r"\+")]
        scores = scores.assign(copy=scores.model.str.split("+").str[1].replace({"aci": f"aci {gamma}"}),
                               base=scores.model.str.split("+").str[0])
        frames.append(scores)
    scores = pd.concat(frames).drop_duplicates(["copy", "dataset", "base", "origin"])
    crps = scores.groupby(["copy", "dataset", "base"]).crps.mean().unstack("copy")
    relative = crps.div(crps["agaci"], axis=0).mean()
    table = []
    for copy, group in scores.groupby("copy"):
        found = blocks(group.assign(model=group.base))
        table.append({"copy": copy, "blocks": len(found), "in band": int(found.in_band.sum()),
                      "share": round(found.in_band.mean(), 3),
                      "mean |coverage − nominal|": round(
                          ((found.coverage_80 - 0.8).abs() + (found.coverage_50 - 0.5).abs()).mean() / 2, 4),
                      "CRPS / agaci's": round(relative[copy], 4)})
    return pd.DataFrame(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gammas", nargs="+", type=float, default=[0.005, 0.02, 0.05, 0.1])
    parser.add_argument("--out", type=Path, default=Path("runs/aci-step-size"))
    parser.add_argument("--analyse-only", type=Path, metavar="OUT", help="read OUT's evaluations, run nothing")
    args = parser.parse_args(argv)
    out = args.analyse_only or args.out
    if args.analyse_only is None:
        paths = before_cutoffs(out / "data")
        for i, gamma in enumerate(args.gammas):
            evaluate(paths, gamma, out / f"gamma-{gamma:g}", agaci=i == 0)
    print(f"blocks of {BLOCK} fresh windows before each market's cutoff, horizon 5, six baselines:")
    table = analyse(out)
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(str(value) for value in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
