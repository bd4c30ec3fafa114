"""How often does a perfectly calibrated forecaster land in the coverage bands?

The markets check asks every calibrated model's fresh 80% interval to cover within 0.77-0.83 and
its 50% interval within 0.47-0.53. With overlapping multi-step windows (one origin per row,
horizon h) a market's fresh period holds few independent windows, so even the true predictive
distribution misses the bands by chance. This simulates it: i.i.d. N(0, 1) daily returns, the
exact h-step predictive N(0, h) at every origin one row apart, and the share of simulated fresh
periods whose coverage lands in both bands, for the window counts of the five built-in markets.

    python bench/coverage_band.py            # about 10 s
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

# Fresh windows one row apart in `configs/bench-markets.yaml` (horizon 5) and at one step.
WINDOWS = {"jkse": 181, "n225": 550, "ndx": 564, "sp500": 998, "nasdaq": 998}


def in_band_share(windows: int, horizon: int, runs: int, seed: int) -> tuple[float, float, float]:
    """Shares of simulated periods with the 80% interval in band, the 50% in band, and both."""
    rng = np.random.default_rng(seed)
    z80, z50 = stats.norm.ppf(0.9), stats.norm.ppf(0.75)
    shocks = rng.standard_normal((runs, windows + horizon))
    # The h-step sum from each origin, standardised: exactly N(0, 1) under the true predictive.
    sums = np.lib.stride_tricks.sliding_window_view(shocks, horizon, axis=1)[:, 1:windows + 1].sum(-1)
    sums /= np.sqrt(horizon)
    cover80 = np.mean(np.abs(sums) <= z80, axis=1)
    cover50 = np.mean(np.abs(sums) <= z50, axis=1)
    ok80 = (cover80 >= 0.77) & (cover80 <= 0.83)
    ok50 = (cover50 >= 0.47) & (cover50 <= 0.53)
    return float(ok80.mean()), float(ok50.mean()), float((ok80 & ok50).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000, help="simulated fresh periods per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| market | fresh windows | horizon | P(80% in 0.77-0.83) | P(50% in 0.47-0.53) | P(both) |")
    print("|---|---|---|---|---|---|")
    for horizon in (1, 5):
        for name, windows in WINDOWS.items():
            ok80, ok50, both = in_band_share(windows, horizon, args.runs, args.seed)
            print(f"| {name} | {windows} | {horizon} | {ok80:.3f} | {ok50:.3f} | {both:.3f} |")


if __name__ == "__main__":
    main()
