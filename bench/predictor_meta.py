"""The predictor's meta-parameters three ways, scored one step ahead on the same fresh period.

For each built-in market, on the rows after the default cutoff (80% of the rows, the one cutoff
rule of every command):

- ``default``: the kernel-mixture predictor (``gaussian_share = 0``: the draws come from the
  kernels; every other setting the project's default) with the config's epsilon 0.1, step size
  0.5 and every kernel temperature 1;
- ``optuna``: the same with epsilon and step size chosen by ``chaosfm tune``'s library function
  (:func:`chaosfm.jobs.tune.run`: TPE over walk-forward folds of one-step CRPS on rows before the
  cutoff only);
- ``gradient``: the same with ``meta_learning`` on: epsilon, step size and the four temperatures
  learned online by Adam on each step's one-step CRPS (``predictor/_meta.py``), from the first
  row through the rows before the cutoff and on through the fresh period, causally;
- ``project default``: the predictor as shipped (``gaussian_share = 1``: its one-step forecast is
  the EMA scale's normal, which no meta-parameter changes), for reference;
- ``random walk``: :class:`chaosfm.forecasters.RandomWalk` (20 returns of volatility).

Every predictor streams every row from the first (the online predictor's own protocol) and is
scored only on the fresh rows: one-step CRPS of its 64 samples (``chaosfm.evaluate.crps``), the
paired difference of each arm against ``default`` and against the random walk with a 95%
bootstrap interval (``chaosfm.evaluate.paired_differences``, one window per row), the coverage of
the 80% interval, and the wall time of the arm (compilation and tuning included).

    nice -n 19 .venv/bin/python bench/predictor_meta.py --markets sp500 nasdaq --trials 6 --folds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from chaosfm.data import load
from chaosfm.evaluate import coverage, crps, paired_differences
from chaosfm.forecasters import RandomWalk
from chaosfm.jobs.tune import DEFAULT_SPACE, TuneConfig, predictor_with, run, tuning_frame
from chaosfm.predictor import PredictorConfig, StreamConfig, init_predictor, update_predictor, warm_start

MARKETS = ("sp500", "nasdaq", "ndx", "n225", "jkse")
META_SPACE = ("orchestrator.epsilon", "orchestrator.step_size")


def split(name: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The market's rows (its first asset) and the default cutoff (the tune job's rule)."""
    before = tuning_frame(TuneConfig(data=name, length=None))
    frame = load(name)
    if "asset" in frame.columns:
        frame = frame[frame["asset"] == before["asset"].iloc[0]].reset_index(drop=True)
    return frame, before["timestamp"].iloc[-1]


def stream(values: np.ndarray, config: PredictorConfig, seed: int = 0):
    """The predictor over every value; ``samples[i]`` ``(S,)`` forecast ``values[i + 1]``.

    The DGM is warm-started when warm-up ends, as the forecaster and ``chaosfm stream`` do.
    Returns the samples ``(T, S)`` (NaN where not warm) and the last state.
    """
    step = jax.jit(lambda state, value: update_predictor(state, value, config))
    state = init_predictor(config, float(values[0]), key=jax.random.key(seed))
    samples = np.full((len(values), config.num_samples), np.nan)
    for i in range(1, len(values)):
        out, state = step(state, np.float32(values[i]))
        if bool(out.warm):
            samples[i] = np.asarray(out.samples, np.float64)
        if int(out.count) == config.warmup:
            state = warm_start(state, config, key=jax.random.key(seed + 1))
    return samples, state


def random_walk(frame: pd.DataFrame, rows: np.ndarray, num_samples: int) -> np.ndarray:
    """RandomWalk's one-step samples ``(len(rows), S)`` from the history up to each row."""
    model = RandomWalk().fit(frame.iloc[: rows[0] + 1])
    out = np.empty((len(rows), num_samples))
    for j, i in enumerate(rows):
        context = frame.iloc[i - model.window : i + 1]
        out[j] = model.forecast(context, 1, num_samples, key=jax.random.key(int(i))).samples[:, 0, 0]
    return out


def tuned(name: str, base: PredictorConfig, trials: int, folds: int, out: Path) -> tuple[PredictorConfig, dict]:
    """Epsilon and step size by ``chaosfm tune`` on the rows before the cutoff (one-step CRPS)."""
    config = TuneConfig.model_validate({
        "data": name, "horizon": 1, "max_folds": folds, "trials": trials, "seed": 0, "out": str(out),
        "space": {path: DEFAULT_SPACE[path].model_dump() for path in META_SPACE},
        "base": StreamConfig(predictor=base).model_dump(mode="json"),
    })
    import optuna

    try:
        run(config)
    except Exception as error:  # noqa: BLE001 - the trials are in the study whatever the outputs did
        print(f"note: chaosfm tune did not finish writing its outputs ({error!r}); the best trial is"
              " read from its study", flush=True)
    study = optuna.load_study(study_name=config.study, storage=config.storage_url())
    metrics = {"best_params": study.best_trial.params, "best_value": study.best_value}
    return predictor_with(base, metrics["best_params"]), metrics


def bench_market(name: str, trials: int, folds: int) -> list[dict]:
    frame, cutoff = split(name)
    values = frame["close"].to_numpy(np.float64)
    # Row i's samples forecast row i + 1: the fresh forecasts are those of rows after the cutoff.
    fresh = np.flatnonzero((frame["timestamp"] > cutoff).to_numpy()[1:])
    observed = values[fresh + 1]
    base = PredictorConfig(gaussian_share=0.0)
    arms: dict[str, tuple[np.ndarray, float, str]] = {}

    def score(label: str, config: PredictorConfig, extra_seconds: float = 0.0, note: str = "") -> None:
        started = time.perf_counter()
        samples, state = stream(values, config)
        seconds = time.perf_counter() - started + extra_seconds
        if state.meta is not None:
            p = state.meta.params
            note = (f"eps {float(p.epsilon):.3g}, tau {float(p.step_size):.3g}, T "
                    + "/".join(f"{t:.2f}" for t in np.asarray(p.temperatures)))
        arms[label] = (samples[fresh], seconds, note)

    score("default", base, note="eps 0.1, tau 0.5, T 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        best, metrics = tuned(name, base, trials, folds, Path(folder))
    tuning_seconds = time.perf_counter() - started
    score("optuna", best, tuning_seconds,
          f"eps {best.orchestrator.epsilon:.3g}, tau {best.orchestrator.step_size:.3g}"
          f" (TPE, {trials} trials x <= {folds} folds)")
    score("gradient", base.model_copy(update={"meta_learning": True}))
    score("project default", PredictorConfig(), note="gaussian_share 1")
    started = time.perf_counter()
    walk = random_walk(frame, fresh, base.num_samples)
    arms["random walk"] = (walk, time.perf_counter() - started, "20 returns")

    scores = {label: crps(samples.T, observed) for label, (samples, _, _) in arms.items()}
    table = pd.DataFrame([
        {"model": label, "asset": name, "origin": int(i), "window_class": "fresh", "crps": value}
        for label, values_ in scores.items() for i, value in zip(fresh, values_)
    ])
    against_default = paired_differences(table, list(arms), "default", ["crps"])
    against_walk = paired_differences(table, list(arms), "random walk", ["crps"])
    rows = []
    for label, (samples, seconds, note) in arms.items():
        rows.append({
            "market": name,
            "model": label,
            "fresh rows": len(fresh),
            "crps": float(np.mean(scores[label])),
            "vs default": against_default.get(label, {}).get("crps"),
            "vs random walk": against_walk.get(label, {}).get("crps"),
            "coverage 80%": float(coverage(samples.T, observed, 0.8)),
            "seconds": seconds,
            "meta-parameters": note,
        })
    return rows


def _interval(entry) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    return f"{entry['value']:+.4f} [{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", nargs="+", default=list(MARKETS), choices=MARKETS)
    parser.add_argument("--trials", type=int, default=6, help="Optuna trials per market")
    parser.add_argument("--folds", type=int, default=10, help="walk-forward folds per trial")
    args = parser.parse_args()
    print("| market | model | CRPS | vs default (95% CI) | vs random walk (95% CI) | coverage 80% | seconds | meta-parameters |")
    print("|---|---|---:|---|---|---:|---:|---|")
    for name in args.markets:
        for row in bench_market(name, args.trials, args.folds):
            print(f"| {row['market']} ({row['fresh rows']} rows) | {row['model']} | {row['crps']:.4f} | "
                  f"{_interval(row['vs default'])} | {_interval(row['vs random walk'])} | "
                  f"{row['coverage 80%']:.3f} | {row['seconds']:.0f} | {row['meta-parameters']} |", flush=True)


if __name__ == "__main__":
    main()
