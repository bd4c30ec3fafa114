"""The online predictor's own calibration step, chosen on rows before each market's cutoff.

    python bench/predictor_calibration_step.py [--gammas 0.005 0.01 0.015 0.02 0.03 0.05]

The markets issue asks one thing of the predictor one step ahead: over the fresh period of each
built-in market, a CRPS at most the random walk's *and* both coverages in band (0.77-0.83 for the
80% interval, 0.47-0.53 for the 50%). A larger ACI step size puts the coverage in band more often
and costs CRPS (the levels jitter), so the step size is a trade between the two halves.

This script scores that trade without touching a fresh row. With its defaults (every draw from
the normal of the EMA scale, no drift) the predictor's one-step forecast is ``N(0, scale^2)``
reshaped by its symmetric ACI levels, and the levels are judged by that normal's exact quantiles.
So it is replayed here in float64 with scipy's normal (a replica, checked below against the
predictor itself on the first rows of sp500), scored by its exact CRPS (a 4,000-level quantile
integral, no sampling noise) beside the random walk's (the evaluator's: a log-normal with the
standard deviation of the last 20 log returns), on every row before each market's cutoff (its
first 80%). Periods as long as each market's fresh period (the fresh one-step windows of
``chaosfm evaluate --every 1 --skip-in-sample``) slide over those rows 25 windows apart, and the
table gives the share of periods in which the CRPS is at or below the random walk's, both
coverages are in band, and both hold. The step size chosen is the one with the highest product
over the five markets of "both hold": an estimate, from rows before the cutoffs, of the chance
that the fresh check passes on all five. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy.special import ndtri

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("CHAOSFM_PROGRESS", "0")

MARKETS = ("sp500", "nasdaq", "ndx", "n225", "jkse")
FRESH = {"sp500": 1002, "nasdaq": 1002, "ndx": 568, "n225": 554, "jkse": 185}
"""Fresh one-step windows per market (docs/predictor.md, "Measured at 1,000 samples"): the length
of the periods scored here."""
STRIDE = 25
FIRST_SCORED = 60  # rows; the random walk needs 21, the predictor's warm-up is 32
BANDS = {"80": (0.77, 0.83), "50": (0.47, 0.53)}
U = (np.arange(4000) + 0.5) / 4000
Z = ndtri(U)


def _crps(quantiles: np.ndarray, y: float) -> float:
    """CRPS as twice the pinball loss integrated over the levels ``U``."""
    error = y - quantiles
    return float(2.0 * np.mean(np.maximum(U * error, (U - 1.0) * error)))


def replica(values: np.ndarray, gamma: float, *, decay: float = 0.06, warmup: int = 32):
    """Per scored step ``t`` (the increment ``values[t + 1] - values[t]``): the replica's CRPS, its
    50% and 80% hits, and its final symmetric ACI levels and EMA scale.

    The levels (19, 0.05 ... 0.95) move as ``OnlinePredictorForecaster``'s: ``gamma * (1{y > q} -
    (1 - tau))`` against the normal quantiles ``scale * Phi^-1(level)`` (levels clipped to
    [1/1025, 1024/1025]), then folded symmetric. The forecast moves each level ``u`` of the normal
    by the interpolated difference between adapted and nominal quantiles (flat beyond the grid).
    """
    from chaosfm.forecasters import ACI_LEVELS

    grid = np.asarray(ACI_LEVELS)
    edge = 1.0 / 1025
    increments = np.diff(values)
    levels, variance, rows = grid.copy(), 0.0, []
    for k, y in enumerate(increments):
        scale = np.sqrt(variance)
        if k >= warmup - 1:
            usable = np.clip(np.maximum.accumulate(np.clip(levels, 0.0, 1.0)), edge, 1.0 - edge)
            shift = ndtri(usable) - ndtri(grid)
            quantiles = scale * (Z + np.interp(U, grid, shift))
            q25, q75, q10, q90 = np.interp([0.25, 0.75, 0.1, 0.9], U, quantiles)
            rows.append((k, _crps(quantiles, y), q25 <= y <= q75, q10 <= y <= q90))
            if gamma > 0:
                levels = levels + gamma * ((y > scale * ndtri(usable)) - (1.0 - grid))
                levels = 0.5 * (levels + 1.0 - levels[::-1])
        weight = max(decay, 1.0 / (k + 1))
        variance = (1.0 - weight) * variance + weight * y * y
    return rows, levels, np.sqrt(variance)


def random_walk(values: np.ndarray, window: int = 20) -> dict[int, float]:
    """The evaluator's random walk one step ahead: exact CRPS of its log-normal, per step ``k``."""
    logs = np.diff(np.log(values))
    out = {}
    for k in range(window, len(values) - 1):
        sigma = np.std(logs[k - window:k], ddof=1)
        out[k] = _crps(values[k] * np.expm1(sigma * Z), values[k + 1] - values[k])
    return out


def check_replica(gamma: float, rows: int = 400) -> tuple[float, float]:
    """Largest level difference and relative scale difference between the replica and
    ``OnlinePredictorForecaster`` fitted on the first ``rows`` of sp500."""
    from chaosfm.data import load
    from chaosfm.predictor import OnlinePredictorForecaster

    frame = load("sp500").iloc[:rows]
    forecaster = OnlinePredictorForecaster(calibration_gammas=(gamma,)).fit(frame)
    _, levels, scale = replica(frame["close"].to_numpy(np.float64), gamma)
    stream = forecaster.streams[str(frame["asset"].iloc[0])]
    return (float(np.max(np.abs(stream.calibration.levels[0, 0, 0] - levels))),
            float(abs(float(stream.state.scale) / scale - 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.005, 0.01, 0.015, 0.02, 0.03, 0.05])
    args = parser.parse_args()
    from chaosfm.data import load

    level_gap, scale_gap = check_replica(0.02)
    print(f"replica against the predictor (sp500, first 400 rows, gamma 0.02): levels within {level_gap:.1e},"
          f" scale within {scale_gap:.1e} relative")
    products = {g: 1.0 for g in args.gammas}
    print("\n| market | periods (length) | gamma | CRPS / random walk | CRPS <= random walk | in band | both |")
    print("|---|---|---|---|---|---|---|")
    for name in MARKETS:
        frame = load(name)
        values = frame["close"].to_numpy(np.float64)[: int(0.8 * len(frame))]
        walk = random_walk(values)
        length = FRESH[name]
        for gamma in args.gammas:
            rows = [row for row in replica(values, gamma)[0] if row[0] >= FIRST_SCORED]
            crps = np.array([r[1] for r in rows])
            reference = np.array([walk[r[0]] for r in rows])
            hit50 = np.array([r[2] for r in rows], float)
            hit80 = np.array([r[3] for r in rows], float)
            starts = range(0, len(rows) - length + 1, STRIDE)
            better = band = both = 0
            for s in starts:
                part = slice(s, s + length)
                ok_crps = crps[part].mean() <= reference[part].mean()
                ok_band = (BANDS["80"][0] <= hit80[part].mean() <= BANDS["80"][1]
                           and BANDS["50"][0] <= hit50[part].mean() <= BANDS["50"][1])
                better, band, both = better + ok_crps, band + ok_band, both + (ok_crps and ok_band)
            count = len(starts)
            products[gamma] *= both / count
            print(f"| {name} | {count} ({length}) | {gamma} | {crps.mean() / reference.mean():.4f} |"
                  f" {better / count:.2f} | {band / count:.2f} | {both / count:.2f} |", flush=True)
    print("\n| gamma | product over the markets of 'both' |")
    print("|---|---|")
    for gamma, product in products.items():
        print(f"| {gamma} | {product:.3f} |")
    print(f"\nchosen: gamma {max(products, key=products.get)}")


if __name__ == "__main__":
    main()
