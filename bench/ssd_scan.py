"""Chunked SSD scan vs the plain lax.scan recurrence, forward + backward, lengths 256 to 8192.

    python bench/ssd_scan.py [--heads 8 --head-dim 64 --state 64 --chunk 64 --max-length 8192]

Prints one row per length: median seconds of one jitted forward+backward pass (gradients of a
weighted sum of the outputs with respect to x, log_a, B and C) for ``ssd_chunked`` and for
``ssd_reference`` (a ``lax.scan`` over time steps, what one would write first), their ratio, and
the local growth exponent (slope of log time against log length from the previous row). Last,
the fitted exponent of each over all lengths and the check of the target: chunked at least 3x
faster than the reference at length 4096. The default shape is half a layer of the ``small``
Mamba (8 of its 16 heads of 64 channels, a 64-dimensional state): 8 heads keep the states the
reference stores for its backward pass at 1 GB at length 8192.

Times on a shared machine drift; the ratio, measured in the same run, is the number to read.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from chaosfm.models import ssd_chunked, ssd_reference  # noqa: E402


def _inputs(length: int, heads: int, head_dim: int, state: int):
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (length, heads, head_dim))
    log_a = -jax.nn.softplus(jax.random.normal(keys[1], (length, heads)))
    b = jax.random.normal(keys[2], (length, heads, state)) / math.sqrt(state)
    c = jax.random.normal(keys[3], (length, heads, state)) / math.sqrt(state)
    return x, log_a, b, c


def _forward_backward(scan, **kwargs):
    def loss(x, log_a, b, c):
        y, final = scan(x, log_a, b, c, **kwargs)
        return jnp.sum(y * y) + jnp.sum(final)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))


def _time(function, inputs, budget: float) -> float:
    jax.block_until_ready(function(*inputs))  # compile and warm up
    times = []
    started = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < budget and len(times) < 20):
        t0 = time.perf_counter()
        jax.block_until_ready(function(*inputs))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--state", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--min-length", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per cell")
    args = parser.parse_args(argv)

    chunked = _forward_backward(ssd_chunked, chunk_size=args.chunk)
    reference = _forward_backward(ssd_reference)
    lengths = []
    length = args.min_length
    while length <= args.max_length:
        lengths.append(length)
        length *= 2

    print(
        f"SSD forward+backward, heads={args.heads} head_dim={args.head_dim} state={args.state} "
        f"chunk={args.chunk}; {jax.devices()[0].platform}, {os.cpu_count()} cores; median seconds"
    )
    header = (
        f"{'length':>7} {'chunked s':>10} {'reference s':>12} {'ratio':>7} "
        f"{'exp chunked':>12} {'exp reference':>14}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for length in lengths:
        inputs = _inputs(length, args.heads, args.head_dim, args.state)
        t_chunked = _time(chunked, inputs, args.budget)
        t_reference = _time(reference, inputs, args.budget)
        growth = ("", "")
        if rows:
            previous = rows[-1]
            scale = math.log(length / previous[0])
            growth = (
                f"{math.log(t_chunked / previous[1]) / scale:.2f}",
                f"{math.log(t_reference / previous[2]) / scale:.2f}",
            )
        rows.append((length, t_chunked, t_reference))
        print(
            f"{length:>7} {t_chunked:>10.4f} {t_reference:>12.4f} {t_reference / t_chunked:>6.1f}x "
            f"{growth[0]:>12} {growth[1]:>14}",
            flush=True,
        )

    logs = np.log([[r[0], r[1], r[2]] for r in rows])
    fit_chunked = np.polyfit(logs[:, 0], logs[:, 1], 1)[0]
    fit_reference = np.polyfit(logs[:, 0], logs[:, 2], 1)[0]
    print(f"fitted growth exponent: chunked {fit_chunked:.2f}, reference {fit_reference:.2f} (1.00 = linear)")
    at_4096 = [r for r in rows if r[0] == 4096]
    if at_4096:
        ratio = at_4096[0][2] / at_4096[0][1]
        verdict = "met" if ratio >= 3 else "NOT met"
        print(f"target (chunked >= 3x faster than reference at 4096): {ratio:.1f}x, {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
