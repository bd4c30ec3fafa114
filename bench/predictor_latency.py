"""Per-step latency of the online predictor, whole ``update`` and each part, after warm-up.

Prints p50/p99 in microseconds for buffer sizes 128, 256 and 1024, beside a reference measured in
the same run: an EWMA random-walk step jitted the same way (the floor any jitted step pays for
dispatch on this machine). Ratios to the reference travel across machines; absolute numbers do
not. Usage: ``python bench/predictor_latency.py [--steps 300] [--sizes 128 256 1024]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm.predictor import PredictorConfig, hoelder_wtmm, init_predictor
from chaosfm.predictor._cusum import init_cusum, update_cusum
from chaosfm.predictor._kernel_imex import predict_imex
from chaosfm.predictor._kernel_stable import predict_stable
from chaosfm.predictor._orchestrator import init_orchestrator, update_orchestrator
from chaosfm.predictor._predictor import jitted_update


def _percentiles(function, args_stream, steps: int, warm: int = 20) -> tuple[float, float]:
    times = []
    for i in range(steps + warm):
        args = args_stream(i)
        begin = time.perf_counter()
        jax.block_until_ready(function(*args))
        if i >= warm:
            times.append(time.perf_counter() - begin)
    us = np.asarray(times) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 1024])
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    series = 100 + np.cumsum(rng.standard_normal(options.steps + 4000)).astype(np.float32)

    @jax.jit
    def ewma_step(state, x):  # reference: random walk with an EWMA scale
        last, var = state
        var = 0.97 * var + 0.03 * (x - last) ** 2
        return (x, jnp.sqrt(var)), (x, var)

    ref_state = (jnp.float32(100.0), jnp.float32(1.0))
    ref = _percentiles(lambda x: ewma_step(ref_state, x), lambda i: (jnp.float32(series[i]),), options.steps)
    print(f"{'part':<28}{'buffer':>8}{'p50 us':>10}{'p99 us':>10}{'p50 / ref':>11}")
    print(f"{'reference: EWMA random walk':<28}{'-':>8}{ref[0]:>10.0f}{ref[1]:>10.0f}{1.0:>11.1f}")
    for size in options.sizes:
        config = PredictorConfig(buffer_size=size, dgm={"fit_steps": 0})
        update = jitted_update(config)
        state = init_predictor(config, float(series[0]), key=jax.random.key(0))
        warm = max(config.warmup, size) + 5
        for v in series[1:warm]:
            _, state = update(state, jnp.float32(v))
        holder = {"state": state}

        def whole(x):
            out, holder["state"] = update(holder["state"], x)
            return out

        rows = [("whole update", _percentiles(whole, lambda i: (jnp.float32(series[warm + i]),), options.steps))]
        levels = jnp.asarray(series[:size])
        increments = jnp.asarray(np.diff(series[: size + 1]))
        ones = jnp.ones(size)
        hold = jax.jit(lambda x: hoelder_wtmm(x, config.hoelder).hoelder)
        rows.append(("Hölder (WTMM)", _percentiles(hold, lambda i: (levels + i,), options.steps)))
        cus = jax.jit(lambda s, e: update_cusum(s, e, config.cusum))
        cstate = init_cusum(config.cusum)
        rows.append(("CUSUM", _percentiles(cus, lambda i: (cstate, jnp.float32(i % 3)), options.steps)))
        orch = jax.jit(lambda s, p, y: update_orchestrator(
            s, p, y, alarm=jnp.asarray(False), emergency=jnp.asarray(False), config=config.orchestrator))
        ostate = init_orchestrator(4)
        rows.append(("orchestrator (Sinkhorn)", _percentiles(
            orch, lambda i: (ostate, jnp.asarray([0.1, -0.2, 0.3, 0.05 * (i % 5)]), jnp.float32(0.1)), options.steps)))
        stab = jax.jit(lambda x, k: predict_stable(x, ones, config.stable, key=k).prediction)
        rows.append(("kernel A (stable)", _percentiles(stab, lambda i: (increments, jax.random.key(i)), options.steps)))
        imex = jax.jit(lambda x: predict_imex(x, ones, config.imex).prediction)
        rows.append(("kernel C (IMEX)", _percentiles(imex, lambda i: (increments * (1 + 1e-3 * i),), options.steps)))
        for name, (p50, p99) in rows:
            print(f"{name:<28}{size:>8}{p50:>10.0f}{p99:>10.0f}{p50 / ref[0]:>11.1f}")


if __name__ == "__main__":
    main()
