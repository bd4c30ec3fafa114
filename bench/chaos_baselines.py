"""Learned baselines of chaotic flows on Lorenz-63: ESN, NG-RC, MLP flow map, context parroting.

Every forecaster is fitted once, on the first 8,000 rows of ``chaotic_system("lorenz63",
length=10000, seed=0)`` (dt 0.02, so t <= 159.98): ``fit_through`` with that cutoff, the
hyperparameter searches of ``esn``, ``ngrc`` and ``mlp_flow`` running inside ``fit`` on those
rows only. It is then scored by ``chaosfm.evaluate.evaluate`` with ``Protocol(horizon=1000,
context_length=3000, min_context=3000, metrics=("valid_prediction_time",))`` (VPT in Lyapunov
times, threshold 0.4, each channel normalised by the std of the history before the origin):

- **seed 0**, the training trajectory's own continuation: the fresh windows after the cutoff
  (every ``--step`` rows; the in-sample windows before it are scored too, and not reported);
- **seeds 1..10**, independent trajectories (``chaotic_system("lorenz63", length=10000,
  seed=s)``), windows whose first target is after t = 159.98, every ``--test-step`` rows. These
  frames start at row 5,000 (t = 100), so the first origin sits at the cutoff and no time is
  spent on windows before it; the VPT scale is then the std of the >= 3,000 rows before each
  origin in that frame.

Fit times are wall seconds on this shared 2-core VM (no GPU); the load average is printed before
and after; ``/esn`` is each fit time as a ratio to the ESN's, and ``/parrot`` each mean VPT on
seeds 1..10 as a ratio to context parroting's on the same windows. The reference points a
colleague measured on the same split: ESN (1,000 nodes) mean 8.6, NG-RC 7.1, MLP (3 x 128,
20,000 steps, ~33 s) median 5.2 over 20 fresh initial conditions.

Usage: ``python bench/chaos_baselines.py [--models esn,ngrc,mlp_flow,context_parroting]
[--step 9] [--test-step 25] [--seeds 10]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CUTOFF_ROWS = 8000


def _protocol(step: int, num_samples: int):
    from chaosfm.evaluate import Protocol

    return Protocol(
        horizon=1000, context_length=3000, min_context=3000, step=step,
        metrics=("valid_prediction_time",), num_samples=num_samples,
    )


def _fresh_vpt(results, name: str) -> np.ndarray:
    scores = results.scores
    rows = scores[(scores["model"] == name) & (scores["window_class"] == "fresh")]
    return rows["valid_prediction_time"].to_numpy(dtype=np.float64)


def _chosen(forecaster) -> str:
    chosen = getattr(forecaster, "chosen_", None)
    if not chosen:
        return "-"
    return ", ".join(f"{k}={v:g}" for k, v in chosen.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="esn,ngrc,mlp_flow,context_parroting")
    parser.add_argument("--step", type=int, default=9, help="rows between origins on seed 0")
    parser.add_argument("--test-step", type=int, default=25, help="rows between origins on seeds 1..")
    parser.add_argument("--seeds", type=int, default=10, help="independent test trajectories")
    parser.add_argument("--num-samples", type=int, default=1, help="VPT reads the point forecast")
    options = parser.parse_args()

    from chaosfm.data import chaotic_system
    from chaosfm.evaluate import evaluate, fit_through
    from chaosfm.forecasters import make_forecaster

    print(f"machine: {os.cpu_count()} CPU cores, no GPU (shared VM); load average {os.getloadavg()}")
    frame = chaotic_system("lorenz63", length=10000, seed=0)
    cutoff = float(frame["timestamp"].iloc[CUTOFF_ROWS - 1])
    names = [n.strip() for n in options.models.split(",") if n.strip()]
    forecasters = {name: make_forecaster(name) for name in names}
    fit_seconds = {}
    for name, forecaster in forecasters.items():
        begin = time.perf_counter()
        fit_through({name: forecaster}, frame, cutoff)
        fit_seconds[name] = time.perf_counter() - begin
        print(f"fitted {name} in {fit_seconds[name]:.1f} s; chosen: {_chosen(forecaster)}")

    protocol = _protocol(options.step, options.num_samples)
    own = evaluate(forecasters, frame, protocol, cutoff=cutoff)
    tests = []
    test_protocol = _protocol(options.test_step, options.num_samples)
    for seed in range(1, options.seeds + 1):
        other = chaotic_system("lorenz63", length=10000, seed=seed)
        cropped = other.iloc[CUTOFF_ROWS - 3000 :].reset_index(drop=True)
        cropped.attrs = dict(other.attrs)
        tests.append(evaluate(forecasters, cropped, test_protocol, cutoff=cutoff))

    reference = fit_seconds.get("esn")
    pooled = {
        name: np.concatenate([_fresh_vpt(results, name) for results in tests]) if tests else np.array([])
        for name in forecasters
    }
    parrot = pooled.get("context_parroting")
    print()
    print(f"Lorenz-63, dt 0.02, fit on rows t <= {cutoff:g}; VPT in Lyapunov times "
          f"(lambda = {frame.attrs['lyapunov_exponent']:.4f})")
    header = (f"{'model':<18} {'fit s':>7} {'/esn':>6} | {'seed 0: n':>9} {'mean':>6} {'median':>6} | "
              f"{'seeds 1-' + str(options.seeds) + ': n':>13} {'mean':>6} {'median':>6} {'/parrot':>7} | chosen")
    print(header)
    print("-" * len(header))
    for name, forecaster in forecasters.items():
        first, rest = _fresh_vpt(own, name), pooled[name]
        ratio = f"{fit_seconds[name] / reference:6.2f}" if reference else "     -"
        mean, median = (rest.mean(), np.median(rest)) if rest.size else (np.nan, np.nan)
        versus = mean / parrot.mean() if parrot is not None and parrot.size else np.nan
        print(
            f"{name:<18} {fit_seconds[name]:7.1f} {ratio} | {first.size:9d} {first.mean():6.2f} "
            f"{np.median(first):6.2f} | {rest.size:13d} {mean:6.2f} {median:6.2f} {versus:7.2f} | "
            f"{_chosen(forecaster)}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
