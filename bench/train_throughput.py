"""Training throughput: tokens/s and model-FLOP utilisation of GPT and Mamba, beside PyTorch.

    python bench/train_throughput.py [--sizes tiny small] [--context 256] [--steps N] [--batch B]

Each row trains one model for a few steps with the real loop (``chaosfm.train.train``: AdamW,
clipping, NaN guard, logging) on random codes (vocabulary 256) and reports tokens/s after the
first steps (compilation excluded) and before the last (which writes the closing checkpoint), and
the model-FLOP utilisation: training FLOPs per token
(6 x matmul parameters + attention or SSD terms, the PaLM appendix B accounting) times tokens/s,
over the FLOP/s of a large float32 matmul measured on this machine in the same run (before every
row and at the end; the best of these is the peak).

The reference a user would otherwise pick is the same GPT (RoPE, QK-norm, GQA, ReLU², no biases,
untied head) written in PyTorch, trained eagerly on the CPU with torch.optim.AdamW. PyTorch is
not a chaosfm dependency; install it for this benchmark only:

    pip install torch==2.13.0

Without it the PyTorch rows are printed as skipped. Numbers from a shared machine drift; compare
rows measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("CHAOSFM_PROGRESS", "0")
from chaosfm.models import GPTConfig, MambaConfig, build_model, count_params  # noqa: E402
from chaosfm.train import TrainConfig, code_loss, train  # noqa: E402

VOCAB = 256
BATCH = {"tiny": 8, "mini": 4, "small": 4}
TORCH_INSTALL = "pip install torch==2.13.0"


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a float32 ``size x size`` matmul with JAX."""
    a = jax.random.normal(jax.random.key(0), (size, size))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def training_flops_per_token(config, params: int, embedding: int, context: int) -> float:
    """6 x (parameters that multiply) plus the sequence-mixing terms, fwd + bwd."""
    dense = 6 * (params - embedding)
    if isinstance(config, GPTConfig):
        return dense + 12 * config.n_layers * context * config.d_model
    chunk = min(config.chunk_size, context)
    ssd = (
        2 * config.heads * (chunk * (config.d_state + config.head_dim) + 2 * config.d_state * config.head_dim)
    )
    return dense + 3 * config.n_layers * ssd


def chaosfm_tokens_per_second(config, batch: int, context: int, steps: int) -> float:
    model = build_model(config, key=jax.random.key(0))
    loop = TrainConfig(
        steps=steps,
        batch_size=batch,
        learning_rate=1e-3,
        warmup_steps=1,
        checkpoint_every=10**6,
        log_every=10**6,
    )
    codes = np.random.default_rng(0).integers(0, VOCAB, (steps, batch, context + 1)).astype(np.int32)
    stamps: dict[int, float] = {}
    warm = max(2, steps // 4)

    def on_step(step, metrics):
        stamps[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as run:
        train(
            model,
            lambda m, b, k: code_loss(m, b, k),
            lambda step: {"codes": codes[step]},
            loop,
            run,
            on_step=on_step,
        )
    # The last step also writes the run's closing checkpoint (parameters and AdamW moments: 0.23 GB for
    # the small GPT): disk time, not training, so the window ends at the step before it.
    return (steps - 1 - warm) * batch * context / (stamps[steps - 1] - stamps[warm])


def torch_gpt_tokens_per_second(config: GPTConfig, batch: int, context: int, steps: int):
    """The same GPT in PyTorch (eager, CPU); None when torch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn
    except ImportError:
        return None

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    d, heads, kv_heads = config.d_model, config.n_heads, config.n_kv_heads
    head_dim = d // heads

    def rope(x, positions):  # x: (batch, heads, time, head_dim)
        half = head_dim // 2
        frequencies = config.rope_base ** (-torch.arange(half, dtype=torch.float32) / half)
        angles = positions[:, None].float() * frequencies[None, :]
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(d, heads * head_dim, bias=False)
            self.k = nn.Linear(d, kv_heads * head_dim, bias=False)
            self.v = nn.Linear(d, kv_heads * head_dim, bias=False)
            self.o = nn.Linear(heads * head_dim, d, bias=False)
            self.up = nn.Linear(d, config.mlp_ratio * d, bias=False)
            self.down = nn.Linear(config.mlp_ratio * d, d, bias=False)

        def forward(self, x, positions):
            b, t, _ = x.shape
            h = F.rms_norm(x, (d,))
            q = F.rms_norm(self.q(h).view(b, t, heads, head_dim), (head_dim,)).transpose(1, 2)
            k = F.rms_norm(self.k(h).view(b, t, kv_heads, head_dim), (head_dim,)).transpose(1, 2)
            v = self.v(h).view(b, t, kv_heads, head_dim).transpose(1, 2)
            q, k = rope(q, positions), rope(k, positions)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.o(attn.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.relu(self.up(F.rms_norm(x, (d,)))).square())

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(config.vocab_size, d)
            self.blocks = nn.ModuleList(Block() for _ in range(config.n_layers))
            self.head = nn.Linear(d, config.vocab_size, bias=False)

        def forward(self, codes):
            positions = torch.arange(codes.shape[1])
            x = self.embedding(codes)
            for block in self.blocks:
                x = block(x, positions)
            return self.head(F.rms_norm(x, (d,)))

    model = TorchGPT()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    codes = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (steps, batch, context + 1)))
    warm = max(2, steps // 4)
    started = None
    for step in range(steps):
        if step == warm:
            started = time.perf_counter()
        logits = model(codes[step, :, :-1])
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), codes[step, :, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError("PyTorch reference diverged")
    return (steps - warm) * batch * context / (time.perf_counter() - started), params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=sorted(BATCH))
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="steps per row (default: 16 tiny, 8 others)")
    parser.add_argument(
        "--batch", type=int, default=None, help="windows per step for every row (default: 8 tiny, 4 others)"
    )
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 4:
        parser.error(f"--steps {args.steps}: at least 4 (2 warm-up steps, 1 timed, 1 writing the checkpoint)")
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch {args.batch}: must be positive")

    # The peak is measured before every row and after the last, and every MFU is taken against the
    # highest of them: on a shared machine a single early measurement can land in a busy moment and
    # flatter every row after it.
    peaks = [matmul_flops()]
    rows: list[tuple] = []
    print(f"training throughput, context {args.context}, vocab {VOCAB}, float32; {os.cpu_count()} cores")
    for size in args.sizes:
        batch = args.batch or BATCH[size]
        steps = args.steps or (16 if size == "tiny" else 8)
        gpt = GPTConfig.from_size(size, vocab_size=VOCAB, context_length=args.context)
        mamba = MambaConfig.from_size(size, vocab_size=VOCAB, context_length=args.context)
        for name, config in ((f"chaosfm GPT {size}", gpt), (f"chaosfm Mamba-2 {size}", mamba)):
            model = build_model(config, key=jax.random.key(0))
            params, embedding = count_params(model), config.vocab_size * config.d_model
            flops = training_flops_per_token(config, params, embedding, args.context)
            peaks.append(matmul_flops())
            tokens_per_s = chaosfm_tokens_per_second(config, batch, args.context, steps)
            rows.append((name, params, batch, tokens_per_s, flops, ""))
            print(f"  measured {name}", flush=True)
        peaks.append(matmul_flops())
        measured = torch_gpt_tokens_per_second(gpt, batch, args.context, steps)
        if measured is None:
            note = f"torch not installed: {TORCH_INSTALL}"
            rows.append((f"PyTorch GPT {size}", None, batch, None, None, note))
        else:
            tokens_per_s, params = measured
            flops = training_flops_per_token(gpt, params, gpt.vocab_size * gpt.d_model, args.context)
            note = "eager, torch.optim.AdamW"
            rows.append((f"PyTorch GPT {size}", params, batch, tokens_per_s, flops, note))
    peaks.append(matmul_flops())
    peak = max(peaks)
    print(
        f"measured 2048² float32 matmul, {len(peaks)} times in this run: best {peak / 1e9:.1f} GFLOP/s "
        f"(lowest {min(peaks) / 1e9:.1f}); MFU is against the best"
    )
    header = f"{'model':<22} {'params':>9} {'batch':>5} {'tokens/s':>10} {'GFLOP/tok':>10} {'MFU':>6}  note"
    print(header)
    print("-" * len(header))
    for name, params, batch, tokens_per_s, flops, note in rows:
        if tokens_per_s is None:
            print(f"{name:<22} {'':>9} {batch:>5} {'skipped':>10}  {note}")
            continue
        print(
            f"{name:<22} {params / 1e6:>8.2f}M {batch:>5} {tokens_per_s:>10,.0f} "
            f"{flops / 1e9:>10.4f} {flops * tokens_per_s / peak:>6.1%}  {note}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
