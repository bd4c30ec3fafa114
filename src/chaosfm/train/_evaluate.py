"""How well a code model predicts held-out codes, beside the unigram (code frequency) baseline.

Numbers, all over the same scored targets: next-code accuracy, top-5 accuracy, cross-entropy in
nats per code and perplexity ``exp(cross-entropy)``; and the unigram cross-entropy and perplexity
of a model that always predicts the code frequencies of the *training* codes (add-``smoothing``
counts, so a code never seen in training costs a finite amount). A held-out stream is read the
way the model is used: segment by segment with its state carried, primed with the end of the
same asset's training stream when there is one (the past is known at forecast time), so each
scored code sees the model's full context.

Dimension letters: T time (codes), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from chaosfm.models import AbstractCodeModel

__all__ = ["evaluate_codes", "next_token_metrics", "unigram_perplexity"]

_TOP = 5


def _per_position(
    logits: Float[Array, "time vocab"], targets: Int[Array, " time"]
) -> tuple[Float[Array, " time"], Bool[Array, " time"], Bool[Array, " time"]]:
    """Negative log-likelihood, top-1 hit and top-5 hit at each position."""
    logits = logits.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    chosen = jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)
    rank = jnp.sum(logits > target_logit, axis=-1)  # codes scored strictly higher than the target
    return -chosen, rank == 0, rank < _TOP


def _summary(nll: np.ndarray, top1: np.ndarray, top5: np.ndarray) -> dict[str, float]:
    count = int(nll.size)
    if count == 0:
        return {
            "cross_entropy": float("nan"),
            "perplexity": float("nan"),
            "accuracy": float("nan"),
            "top5_accuracy": float("nan"),
            "tokens": 0,
        }
    cross_entropy = float(np.mean(nll, dtype=np.float64))
    return {
        "cross_entropy": cross_entropy,
        "perplexity": float(np.exp(cross_entropy)),
        "accuracy": float(np.mean(top1)),
        "top5_accuracy": float(np.mean(top5)),
        "tokens": count,
    }


def next_token_metrics(
    logits: Float[Array, "time vocab"],
    targets: Int[Array, " time"],
    mask: Bool[Array, " time"] | None = None,
) -> dict[str, float]:
    """Cross-entropy (nats/code), perplexity, accuracy and top-5 accuracy of ``logits`` for ``targets``.

    ``logits[t]`` scores ``targets[t]`` (already shifted); positions where ``mask`` is False are skipped.
    """
    nll, top1, top5 = (np.asarray(v) for v in _per_position(jnp.asarray(logits), jnp.asarray(targets)))
    if mask is not None:
        keep = np.asarray(mask, bool)
        nll, top1, top5 = nll[keep], top1[keep], top5[keep]
    return _summary(nll, top1, top5)


def unigram_perplexity(
    train: Mapping[str, np.ndarray] | np.ndarray,
    targets: Mapping[str, np.ndarray] | np.ndarray,
    vocab_size: int,
    *,
    smoothing: float = 1.0,
) -> dict[str, float]:
    """Cross-entropy and perplexity of predicting every target by the training code frequencies.

    Args:
        train: training codes (per asset or one array): the only source of the frequencies.
        targets: the codes to score.
        vocab_size: codebook size.
        smoothing: pseudo-count added to every code (Laplace smoothing with 1).
    """
    train_codes = _concatenate(train)
    target_codes = _concatenate(targets)
    counts = np.bincount(train_codes, minlength=vocab_size).astype(np.float64) + smoothing
    with np.errstate(divide="ignore"):  # an unseen code without smoothing costs inf, as it should
        log_p = np.log(counts / counts.sum())
    if target_codes.size == 0:
        return {"cross_entropy": float("nan"), "perplexity": float("nan")}
    cross_entropy = float(-np.mean(log_p[target_codes]))
    return {"cross_entropy": cross_entropy, "perplexity": float(np.exp(cross_entropy))}


def _concatenate(streams: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(streams, Mapping):
        parts = [np.asarray(v, np.int64).ravel() for v in streams.values()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.asarray(streams, np.int64).ravel()


@eqx.filter_jit
def _score_segment(model, codes, targets, state, exo):
    kwargs = {} if exo is None else {"exo": exo}
    logits, state = model(codes, state=state, **kwargs)
    return _per_position(logits, targets), state


def evaluate_codes(
    model: AbstractCodeModel,
    heldout: Mapping[str, np.ndarray],
    *,
    train: Mapping[str, np.ndarray] | None = None,
    exo: Mapping[str, np.ndarray] | None = None,
    exo_train: Mapping[str, np.ndarray] | None = None,
    segment_length: int | None = None,
    smoothing: float = 1.0,
) -> dict[str, Any]:
    """Next-code metrics of ``model`` on held-out streams, beside the unigram baseline.

    Args:
        model: a code model.
        heldout: held-out codes per asset (each continues the same asset's training stream, if any).
        train: training codes per asset: primes each held-out stream with its last
            ``context_length`` codes, and gives the unigram frequencies (None: no priming, no unigram).
        exo: the exogenous series per held-out asset (models with ``exo_clock``).
        exo_train: the exogenous series per training asset (for the priming codes).
        segment_length: codes per model call (default: the model's context length).
        smoothing: unigram pseudo-count.

    Returns:
        ``cross_entropy``, ``perplexity``, ``accuracy``, ``top5_accuracy``, ``tokens`` and, with
        ``train``, ``unigram_cross_entropy``, ``unigram_perplexity`` and ``perplexity_ratio``
        (model over unigram; below 1 beats code frequencies).
    """
    context = int(model.config.context_length)
    length = segment_length or context
    all_nll, all_top1, all_top5, all_targets = [], [], [], []
    for asset, codes in heldout.items():
        codes = np.asarray(codes, np.int32).ravel()
        prime = np.zeros(0, np.int32)
        if train is not None and asset in train:
            prime = np.asarray(train[asset], np.int32).ravel()[-context:]
        stream = np.concatenate([prime, codes])
        series = None
        if model.uses_exo:
            if exo is None or asset not in exo:
                raise ValueError(f"{asset}: this model has exo_clock=True; pass exo for the held-out codes")
            prime_exo = np.zeros(0, np.float32)
            if prime.size:
                if exo_train is None or asset not in exo_train:
                    raise ValueError(f"{asset}: pass exo_train to prime with the training codes")
                prime_exo = np.asarray(exo_train[asset], np.float32).ravel()[-prime.size :]
            series = np.concatenate([prime_exo, np.asarray(exo[asset], np.float32).ravel()])
        # Position p predicts stream[p + 1]; score the positions whose target is a held-out code.
        first = max(prime.size - 1, 0)
        targets = np.zeros(stream.size, np.int32)
        targets[:-1] = stream[1:]
        scored = np.zeros(stream.size, bool)
        scored[first : stream.size - 1] = True
        if not scored.any():
            continue
        padded = -(-stream.size // length) * length
        pad = padded - stream.size
        stream_p, targets_p = np.pad(stream, (0, pad)), np.pad(targets, (0, pad))
        series_p = None if series is None else np.pad(series, (0, pad))
        state = model.init_state()
        nll, top1, top5 = [], [], []
        for begin in range(0, padded, length):
            piece = slice(begin, begin + length)
            exo_piece = None if series_p is None else jnp.asarray(series_p[piece])
            (n, t1, t5), state = _score_segment(
                model, jnp.asarray(stream_p[piece]), jnp.asarray(targets_p[piece]), state, exo_piece
            )
            nll.append(np.asarray(n)), top1.append(np.asarray(t1)), top5.append(np.asarray(t5))
        keep = np.pad(scored, (0, pad))
        all_nll.append(np.concatenate(nll)[keep])
        all_top1.append(np.concatenate(top1)[keep])
        all_top5.append(np.concatenate(top5)[keep])
        all_targets.append(targets[scored])
    empty = np.zeros(0)
    result: dict[str, Any] = _summary(
        np.concatenate(all_nll) if all_nll else empty,
        np.concatenate(all_top1) if all_top1 else empty,
        np.concatenate(all_top5) if all_top5 else empty,
    )
    if train is not None:
        target_codes = np.concatenate(all_targets) if all_targets else np.zeros(0, np.int64)
        unigram = unigram_perplexity(train, target_codes, int(model.config.vocab_size), smoothing=smoothing)
        result["unigram_cross_entropy"] = unigram["cross_entropy"]
        result["unigram_perplexity"] = unigram["perplexity"]
        result["perplexity_ratio"] = result["perplexity"] / unigram["perplexity"]
    return result
