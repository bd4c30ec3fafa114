"""Input pipeline: windows/s and tokens/s the Grain pipeline delivers from ArrayRecord shards,
beside the in-memory window sampler and beside what the training step consumes.

    python bench/input_pipeline.py [--config configs/gpt-tiny.yaml] [--steps 300] [--train-steps 60]

Writes the config's training windows with the ``chaosfm shard`` job (``jobs.shard.run``) into a
temporary folder, then, measured in the same run:

* the in-memory :class:`~chaosfm.train.WindowSampler` (what ``chaosfm train`` reads by default);
* a :class:`~chaosfm.train.ShardStream` (Grain ``DataLoader`` over ``ArrayRecordDataSource``, in
  the sampler's order) with 1 and 2 read threads, prefetch on (64 windows read ahead) and off;
* the tiny GPT's training step (``chaosfm.train.train`` through ``fit_code_model``) on the same
  batch shape, its tokens/s read off ``log.jsonl`` once the first (compiling) step is past.

The last column is pipeline tokens/s over training tokens/s: above 1, the pipeline keeps up.
Numbers from a shared machine drift; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("CHAOSFM_PROGRESS", "0")
os.environ.setdefault("CHAOSFM_QUIET", "1")
from chaosfm.jobs import shard as shard_job  # noqa: E402
from chaosfm.jobs.train import TokenizerSection, fenced_codes  # noqa: E402
from chaosfm.train import ShardSet, code_windows, fit_code_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rate(batch_at, steps: int, warmup: int = 5) -> float:
    """Batches per second of ``batch_at(step)`` over ``steps`` steps after ``warmup`` ones."""
    for step in range(warmup):
        batch_at(step)
    started = time.perf_counter()
    for step in range(warmup, warmup + steps):
        batch_at(step)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "gpt-tiny.yaml"))
    parser.add_argument("--steps", type=int, default=300, help="batches read per pipeline row")
    parser.add_argument("--train-steps", type=int, default=60, help="optimizer updates of the training row")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="chaosfm-bench-pipeline-"))
    config = shard_job.read(args.config, {"out": str(work / "shards"), "num_shards": 4})
    index = shard_job.run(config)
    # The in-memory windows from the shards' own tokenizer (no second fit): the same windows.
    saved = config.model_copy(update={"tokenizer": TokenizerSection(path=str(work / "shards" / "tokenizer"))})
    tokenizer, data, _, _ = fenced_codes(saved)
    run_config = saved.run_config(tokenizer.vocab_size)
    batch, window = run_config.train.batch_size, index["window"]
    tokens = batch * (window - 1)  # what one step trains on
    sampler, _ = code_windows(run_config, data, val_fraction=run_config.train.val_fraction, with_exo=False)
    rows = [("in-memory WindowSampler", rate(sampler, args.steps))]
    for threads, prefetch in ((1, 0), (1, 64), (2, 0), (2, 64)):
        stream = ShardSet(work / "shards", read_threads=threads, prefetch=prefetch).stream(
            batch_size=batch, seed=run_config.train.seed, names=["codes"])
        label = f"Grain shards, {threads} thread{'s' if threads > 1 else ''}, prefetch {'64' if prefetch else 'off'}"
        rows.append((label, rate(stream, args.steps)))

    short = run_config.model_copy(update={"train": run_config.train.model_copy(update={
        "steps": args.train_steps, "log_every": 10, "checkpoint_every": args.train_steps, "eval_every": args.train_steps})})
    fit_code_model(short, data, work / "run")
    logged = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    train_tokens = statistics.median(e["tokens_per_s"] for e in logged[1:] if "tokens_per_s" in e)

    print(f"{index['windows']} windows of {window} codes in {len(index['shards'])} shards; batch {batch} "
          f"windows = {tokens} training tokens per step; {args.steps} batches per pipeline row\n")
    print("| source | windows/s | tokens/s | tokens/s ÷ training step's |")
    print("|---|---|---|---|")
    for label, batches in rows:
        print(f"| {label} | {batches * batch:,.0f} | {batches * tokens:,.0f} | {batches * tokens / train_tokens:.1f} |")
    print(f"| training step (tiny GPT, `chaosfm.train.train`) | {train_tokens / (window - 1):,.0f} | "
          f"{train_tokens:,.0f} | 1.0 |")


if __name__ == "__main__":
    main()
