"""Where a GPT training step's time goes, and whether a speed change kept the numbers.

    python bench/train_step.py step [--size tiny] [--batch 8] [--repeats 10] [--donate]
    python bench/train_step.py profile [--size tiny] [--batch 8]
    python bench/train_step.py optimizer [--size small]
    python bench/train_step.py losses OUT.json [--compare BEFORE.json]

``step`` times one jitted step (forward, backward, AdamW as the loop builds it), best of
``--repeats``, beside the best of as many 2048² float32 matmuls, and prints the MFU of
bench/train_throughput.py. ``profile`` traces three steps with ``jax.profiler`` and sums the time
of every XLA operation by kind (matmul fusions, copies, ...) and by the source line it came from.
``optimizer`` times the AdamW update on the one raveled parameter vector (the single-device default)
against leaf by leaf. ``losses`` trains the tiny GPT 20 steps with the real loop (seed 0, batch 8,
context 256, random codes) and writes losses and gradient norms; with ``--compare`` it prints the
largest relative difference to an earlier file: run it before and after a change.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import math
import os
import re
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("CHAOSFM_PROGRESS", "0")
from chaosfm.models import GPTConfig, build_model, count_params  # noqa: E402
from chaosfm.train import TrainConfig, code_loss, make_optimizer, train  # noqa: E402

VOCAB, CONTEXT = 256, 256


def _setup(size: str, batch: int):
    config = GPTConfig.from_size(size, vocab_size=VOCAB, context_length=CONTEXT)
    model = build_model(config, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (batch, CONTEXT + 1)), jnp.int32)
    optimizer = make_optimizer(TrainConfig(steps=100, batch_size=batch, warmup_steps=1), params)

    def step(params, opt_state):
        def objective(params):
            return code_loss(eqx.combine(params, static), {"codes": codes}, None)[0]

        loss, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    flops = 6 * (count_params(model) - VOCAB * config.d_model) + 12 * config.n_layers * CONTEXT * config.d_model
    return step, params, jax.jit(optimizer.init)(params), flops * batch * CONTEXT


def _best(run, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run())
        best = min(best, time.perf_counter() - started)
    return best


def time_step(args) -> None:
    step, params, opt_state, flops = _setup(args.size, args.batch)
    jitted = jax.jit(step, donate_argnums=(0, 1) if args.donate else ())
    state = {"params": jax.tree_util.tree_map(jnp.copy, params), "opt": opt_state}
    a = jax.random.normal(jax.random.key(0), (2048, 2048))
    matmul = jax.jit(lambda a: a @ a)

    def one():
        state["params"], state["opt"], loss = jitted(state["params"], state["opt"])
        return state["params"], loss

    jax.block_until_ready(one())
    jax.block_until_ready(matmul(a))
    seconds, peak_seconds = math.inf, math.inf
    for _ in range(args.repeats):  # alternating, so both see the same load
        seconds = min(seconds, _best(one, 1))
        peak_seconds = min(peak_seconds, _best(lambda: matmul(a), 3))
    peak = 2 * 2048**3 / peak_seconds
    print(
        f"GPT {args.size}, batch {args.batch}: step {seconds * 1e3:.1f} ms, {args.batch * CONTEXT / seconds:,.0f} "
        f"tokens/s; matmul peak {peak / 1e9:.1f} GFLOP/s; MFU {flops / seconds / peak:.1%}"
        + (" (donated buffers)" if args.donate else "")
    )


def profile(args) -> None:
    step, params, opt_state, _ = _setup(args.size, args.batch)
    jitted = jax.jit(step)
    jax.block_until_ready(jitted(params, opt_state))
    hlo = jitted.lower(params, opt_state).compile().as_text()
    repeats = 3
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(repeats):
                jax.block_until_ready(jitted(params, opt_state))
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    per_op: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # XLA's compute threads
                continue
            for event in line.events:
                if not event.name.startswith(("ThunkExecutor", "end:", "Slinky", "Threadpool")):
                    per_op[event.name] += event.duration_ns / repeats / 1e6
    # Source line of each operation, from the stack tables of the compiled module.
    files = dict(re.findall(r"^(\d+) \"(.*)\"$", hlo.split("FunctionNames")[0], re.M))
    locations = {m[0]: (m[1], m[2]) for m in re.findall(r"^(\d+) \{file_name_id=(\d+) function_name_id=\d+ line=(\d+)", hlo, re.M)}
    frames = {m[0]: (m[1], m[2]) for m in re.findall(r"^(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)\}", hlo, re.M)}
    frame_of = dict(re.findall(r"^\s*%([\w.\-]+) = .*stack_frame_id=(\d+)", hlo, re.M))

    def source(op: str) -> str:
        frame, chain = frame_of.get(op), []
        while frame in frames and len(chain) < 16:
            location, parent = frames[frame]
            file, line = locations[location]
            chain.append(f"{os.path.basename(files[file])}:{line}")
            if parent == frame:
                break
            frame = parent
        ours = [c for c in chain if "chaosfm" in c or c.startswith("_")]
        return (ours or chain or ["?"])[0]

    by_kind: collections.Counter = collections.Counter()
    by_line: collections.Counter = collections.Counter()
    for op, ms in per_op.items():
        by_kind[re.sub(r"\.\d+$", "", op)] += ms
        by_line[source(op)] += ms
    total = sum(per_op.values())
    print(f"GPT {args.size}, batch {args.batch}: {total:.1f} ms of XLA operations per step (summed over threads)")
    for title, counter in (("by kind", by_kind), ("by source line", by_line)):
        print(f"-- {title}")
        for name, ms in counter.most_common(args.top):
            print(f"{ms:9.2f} ms {ms / total:6.1%}  {name}")


def optimizer_update(args) -> None:
    config = GPTConfig.from_size(args.size, vocab_size=VOCAB, context_length=CONTEXT)
    params, _ = eqx.partition(build_model(config, key=jax.random.key(0)), eqx.is_inexact_array)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-3), params)
    for flat in (True, False):
        optimizer = make_optimizer(TrainConfig(steps=100, batch_size=4, warmup_steps=1), params, flat=flat)
        opt_state = jax.jit(optimizer.init)(params)

        def update(params, opt_state, grads, optimizer=optimizer):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        jitted = jax.jit(update)
        jax.block_until_ready(jitted(params, opt_state, grads))
        seconds = _best(lambda: jitted(params, opt_state, grads), args.repeats)
        print(f"GPT {args.size}: AdamW {'on one raveled vector' if flat else 'leaf by leaf'}: {seconds * 1e3:.1f} ms")


def losses(args) -> None:
    config = GPTConfig.from_size("tiny", vocab_size=VOCAB, context_length=CONTEXT)
    codes = np.random.default_rng(0).integers(0, VOCAB, (20, 8, CONTEXT + 1)).astype(np.int32)
    loop = TrainConfig(steps=20, batch_size=8, learning_rate=1e-3, warmup_steps=2, checkpoint_every=10**6)
    seen: list[dict] = []
    with tempfile.TemporaryDirectory() as run:
        train(build_model(config, key=jax.random.key(0)), lambda m, b, k: code_loss(m, b, k),
              lambda step: {"codes": codes[step]}, loop, run, on_step=lambda step, metrics: seen.append(metrics))
    curve = {"loss": [m["loss"] for m in seen], "grad_norm": [m["grad_norm"] for m in seen]}
    with open(args.out, "w") as file:
        json.dump(curve, file)
    print(f"wrote {args.out}: loss {curve['loss'][0]:.6f} -> {curve['loss'][-1]:.6f}")
    if args.compare:
        with open(args.compare) as file:
            before = json.load(file)
        for name, values in curve.items():
            old, new = np.asarray(before[name]), np.asarray(values)
            print(f"{name}: largest relative difference to {args.compare}: {np.max(np.abs(new - old) / np.abs(old)):.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, default_size, default_batch in (("step", "tiny", 8), ("profile", "tiny", 8), ("optimizer", "small", 4)):
        command = commands.add_parser(name)
        command.add_argument("--size", default=default_size, choices=["tiny", "mini", "small"])
        command.add_argument("--batch", type=int, default=default_batch)
        command.add_argument("--repeats", type=int, default=10)
        command.add_argument("--top", type=int, default=20)
        command.add_argument("--donate", action="store_true")
    command = commands.add_parser("losses")
    command.add_argument("out")
    command.add_argument("--compare")
    args = parser.parse_args(argv)
    {"step": time_step, "profile": profile, "optimizer": optimizer_update, "losses": losses}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
