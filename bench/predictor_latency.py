"""Per-step latency of the online predictor, whole ``update`` and each part, after warm-up.

For buffer sizes 128, 256 and 1024 it prints p50/p99 wall time (microseconds) and the process CPU
time per step of

- the whole step as ``chaosfm stream`` runs it (``PackedStep``: packed state in, the output's
  host copy out), with the configured ``refresh_every`` and with ``refresh_every = 1``
  (every slow part every step, the worst case the cadence spreads out);
- each part jitted on its own (so each includes one dispatch, about the reference's cost): the
  slow parts (WTMM Hölder, stable fit + draws, IMEX density, DGM OU refit; the collapse monitor
  runs when the network trains) and the per-step ones (CUSUM, orchestrator/Sinkhorn, signature
  ridge, DGM drift from its V_z table);

beside a reference measured in the same run: an EWMA random-walk step jitted the same way (the
floor any jitted step pays for dispatch on this machine).

At the first buffer size (``--option-sizes``) it also prints the whole step with each option that
changes the compiled step, beside the default: ``x64`` (float64 throughout, ``--x64``),
``meta_learning`` (when the installed PredictorConfig has it), ``deterministic`` (threefry keys and
matmul precision pinned, ``stream.deterministic``), and the step fed missing observations (NaN:
the path that counts towards ``degraded_inference``, state kept); and the per-part breakdown again
in float64, so the cost of x64 can be read part by part. A row run under a setting (x64,
deterministic) enters it once per round, around the timed loop, never per call. The machine is shared, so every
measurement is repeated ``--rounds`` times, interleaved, and both the best round and the median
round are printed; CPU time per step is less sensitive to other processes than wall time.

Usage: ``python bench/predictor_latency.py [--steps 400] [--rounds 3] [--sizes 128 256 1024]
[--option-sizes 128] [--xla-threads 1]``. ``--xla-threads 1`` runs XLA's CPU backend single-threaded (set before JAX
starts): small kernels handed to a thread pool wait for a core when the machine is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 1024])
    parser.add_argument("--option-sizes", type=int, nargs="*", default=[128],
                        help="buffer sizes at which each option is timed beside the default")
    parser.add_argument("--xla-threads", type=int, default=0, help="1: single-threaded XLA CPU")
    return parser.parse_args()


OPTIONS = _options() if __name__ == "__main__" else None
if OPTIONS is not None and OPTIONS.xla_threads == 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from chaosfm._config import float_dtype  # noqa: E402
from chaosfm.predictor import PredictorConfig, hoelder_wtmm, init_predictor  # noqa: E402
from chaosfm.predictor._cusum import update_cusum  # noqa: E402
from chaosfm.predictor._kernel_dgm import predict_dgm, refresh_dgm  # noqa: E402
from chaosfm.predictor._kernel_imex import predict_imex  # noqa: E402
from chaosfm.predictor._kernel_signature import (  # noqa: E402
    predict_signature,
    signature_features,
    update_signature,
)
from chaosfm.predictor._kernel_stable import predict_stable  # noqa: E402
from chaosfm.predictor._orchestrator import update_orchestrator  # noqa: E402
from chaosfm.predictor._packed_step import packed_step  # noqa: E402
from chaosfm.predictor._warm import deterministic_mode  # noqa: E402

DEFAULT = contextlib.nullcontext


def x64():
    """float64 for what is built and timed within (thread-local: the main thread's timing loop)."""
    return jax.enable_x64(True)


class Timer:
    """One measured function: ``call(i)`` runs step ``i`` and blocks until it is done."""

    def __init__(self, name: str, size: int | str, call, settings=DEFAULT):
        self.name, self.size, self.call, self.settings = name, size, call, settings
        self.rounds: list[tuple[float, float, float]] = []  # (p50 us, p99 us, cpu us / step)

    def round(self, steps: int, offset: int) -> None:
        times = np.empty(steps)
        with self.settings():  # the settings it was compiled under, entered once per round
            cpu = time.process_time()
            for i in range(steps):
                begin = time.perf_counter()
                self.call(offset + i)
                times[i] = time.perf_counter() - begin
            cpu = (time.process_time() - cpu) / steps
        us = times * 1e6
        self.rounds.append((float(np.percentile(us, 50)), float(np.percentile(us, 99)), cpu * 1e6))

    def best(self) -> tuple[float, float, float]:
        return min(self.rounds, key=lambda r: r[1])

    def median(self) -> tuple[float, float, float]:
        return sorted(self.rounds, key=lambda r: r[1])[len(self.rounds) // 2]


def _reference(series: np.ndarray) -> Timer:
    @jax.jit
    def ewma_step(state, x):  # random walk with an EWMA scale: prediction x, spread sqrt(var)
        last, var = state
        var = 0.97 * var + 0.03 * (x - last) ** 2
        return (x, var), jnp.stack([x, jnp.sqrt(var)])

    holder = {"state": (jnp.float32(series[0]), jnp.float32(1.0))}

    def call(i):
        holder["state"], out = ewma_step(holder["state"], np.float32(series[i]))
        np.asarray(out)  # the host copy a live loop makes

    return Timer("reference: EWMA random walk", "-", call)


def _whole(config: PredictorConfig, series: np.ndarray, label: str, settings=DEFAULT, missing: bool = False) -> Timer:
    """The packed step warmed past its buffer under ``settings``; ``missing``: timed on NaN inputs."""
    with settings():
        step = packed_step(config)
        holder = {"packed": step.pack(init_predictor(config, float(series[0]), key=jax.random.key(0)))}
        warm = max(config.warmup, config.buffer_size) + 8
        for value in series[1:warm]:
            _, holder["packed"] = step(holder["packed"], step.value(value))
        fed = np.full(len(series), np.nan) if missing else series
        inputs = [step.value(value) for value in fed]  # converted before timing, as a feed's parser does

    def call(i):
        out, holder["packed"] = step(holder["packed"], inputs[warm + i])
        step.output(out)

    return Timer(label, config.buffer_size, call, settings)


def _parts(config: PredictorConfig, series: np.ndarray, steps: int, settings=DEFAULT, suffix: str = "") -> list[Timer]:
    with settings():
        return _built_parts(config, series, steps, settings, suffix)


def _built_parts(config: PredictorConfig, series: np.ndarray, steps: int, settings, suffix: str) -> list[Timer]:
    size = config.buffer_size
    dtype = float_dtype()
    state = init_predictor(config, float(series[0]), key=jax.random.key(0))
    levels = jnp.asarray(series[:size], dtype)
    increments = jnp.asarray(np.diff(series[: size + 1]) / np.std(np.diff(series[: size + 1])), dtype)
    valid = jnp.ones(size, dtype)
    path = jnp.cumsum(increments)
    # Each input varies with i so nothing is cached between calls.
    jobs = {
        "Hölder (WTMM)": (
            jax.jit(lambda x: hoelder_wtmm(x, config.hoelder, available=size).hoelder),
            lambda i: (levels + 0.01 * i,),
        ),
        "A stable: fit + draws": (
            jax.jit(lambda x, k: predict_stable(x, valid, config.stable, key=k).prediction),
            lambda i: (increments * (1 + 1e-3 * i), jax.random.key(i)),
        ),
        "C IMEX density": (
            jax.jit(lambda x: predict_imex(x, valid, config.imex).prediction),
            lambda i: (increments * (1 + 1e-3 * i),),
        ),
        "B DGM refit": (
            jax.jit(lambda d, p, k: refresh_dgm(d, p, valid, config.dgm, key=k)[1].entropy),
            lambda i: (state.dgm, path * (1 + 1e-3 * i), jax.random.key(i)),
        ),
        "B DGM drift (every step)": (
            jax.jit(lambda d, p: predict_dgm(d, p, valid, config.dgm)),
            # Only what the drift reads (the V_z table and the OU fit), not the network's leaves.
            lambda i: (state.dgm._replace(params={}, opt_state=()), path * (1 + 1e-3 * i)),
        ),
        "CUSUM (every step)": (
            jax.jit(lambda s, e: update_cusum(s, e, config.cusum)[0].statistic),
            lambda i: (state.cusum, jnp.asarray(np.sin(i), dtype)),
        ),
        "orchestrator (every step)": (
            jax.jit(lambda s, p, y: update_orchestrator(
                s, p, y, alarm=jnp.asarray(False), emergency=jnp.asarray(False), config=config.orchestrator
            )[0].weights),
            lambda i: (state.orchestrator, jnp.asarray([0.1, -0.2, 0.3, 0.05 * (i % 7)], dtype),
                       jnp.asarray(0.1 * np.sin(i), dtype)),
        ),
        "D signature (every step)": (
            jax.jit(lambda s, f, x: predict_signature(
                update_signature(s, f, x[-1], config.signature),
                signature_features(x[-config.signature.window :], config.signature), config.signature,
            )[0]),
            lambda i: (state.signature, state.features, increments * (1 + 1e-3 * i)),
        ),
    }
    timers = []
    for name, (function, arguments) in jobs.items():
        # Inputs are built (on device) before timing: only the call itself is measured.
        prepared = [jax.block_until_ready(arguments(i)) for i in range(steps)]
        jax.block_until_ready(function(*prepared[0]))  # compile outside the timing

        def call(i, function=function, prepared=prepared):
            jax.block_until_ready(function(*prepared[i % len(prepared)]))

        timers.append(Timer(name + suffix, size, call, settings))
    return timers


def _options_timers(config: PredictorConfig, series: np.ndarray, steps: int) -> list[Timer]:
    """The whole step with each option that changes it, and the parts in float64."""
    timers = [
        _whole(config, series, "whole step, x64", x64),
        _whole(config, series, "whole step, deterministic", lambda: deterministic_mode(True)),
        _whole(config, series, "whole step, missing obs. (NaN)", missing=True),
    ]
    if "meta_learning" in PredictorConfig.model_fields:  # added by a later chaosfm
        meta = config.model_copy(update={"meta_learning": True})
        timers.insert(1, _whole(meta, series, "whole step, meta_learning"))
        timers.insert(2, _whole(meta, series, "whole step, meta_learning + x64", x64))
    return timers + _parts(config, series, steps, x64, suffix=", x64")


def main() -> None:
    options = OPTIONS or _options()
    rng = np.random.default_rng(0)
    # float64 values: each step converts them to its own dtype (float32 unless x64), as a feed does.
    series = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(options.steps + 3000)))
    threads = "single-threaded XLA" if options.xla_threads == 1 else "default XLA threading"
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, {threads}; "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    timers = [_reference(series)]
    for size in options.sizes:
        config = PredictorConfig(buffer_size=size, dgm={"fit_steps": 0})
        begin = time.perf_counter()
        timers.append(_whole(config, series, f"whole step, refresh_every={config.refresh_every}"))
        compile_seconds = time.perf_counter() - begin
        every = config.model_copy(update={"refresh_every": 1})
        timers.append(_whole(every, series, "whole step, refresh_every=1"))
        timers.extend(_parts(config, series, options.steps))
        if size in options.option_sizes:
            timers.extend(_options_timers(config, series, options.steps))
        print(f"buffer {size}: compiled and warmed up in {compile_seconds:.1f} s (first config)", flush=True)
    for r in range(options.rounds):
        for timer in timers:
            timer.round(options.steps, offset=0)
        print(f"round {r + 1}/{options.rounds} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    reference = timers[0].best()[0]
    header = f"{'part':<34}{'buffer':>7}{'p50':>8}{'p99':>8}{'cpu/step':>10}{'p50/ref':>9}   median round p50 / p99"
    print(f"\nmicroseconds; best of {options.rounds} interleaved rounds of {options.steps} steps (by p99), "
          f"then the median round\n{header}")
    for timer in timers:
        p50, p99, cpu = timer.best()
        m50, m99, _ = timer.median()
        print(f"{timer.name:<34}{timer.size!s:>7}{p50:>8.0f}{p99:>8.0f}{cpu:>10.0f}{p50 / reference:>9.1f}   {m50:>6.0f} / {m99:.0f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
