"""Next-code metrics and the unigram baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import GPT, GPTConfig
from chaosfm.train import evaluate_codes, next_token_metrics, unigram_perplexity


def test_metrics_of_hand_made_logits():
    logits = jnp.log(jnp.asarray([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25], [0.2, 0.5, 0.3]]))
    targets = jnp.asarray([0, 1, 2, 1])
    metrics = next_token_metrics(logits, targets)
    expected_ce = -np.mean(np.log([0.7, 0.3, 0.25, 0.5]))
    assert metrics["cross_entropy"] == pytest.approx(expected_ce, rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(np.exp(expected_ce), rel=1e-6)
    assert metrics["accuracy"] == 0.5 and metrics["top5_accuracy"] == 1.0 and metrics["tokens"] == 4
    masked = next_token_metrics(logits, targets, mask=jnp.asarray([True, False, False, True]))
    assert masked["accuracy"] == 1.0 and masked["tokens"] == 2


def test_top5_counts_a_target_ranked_fifth_but_not_sixth():
    logits = jnp.asarray([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 2)
    metrics = next_token_metrics(logits, jnp.asarray([4, 5]))
    assert metrics["top5_accuracy"] == 0.5


def test_unigram_uses_training_frequencies_only():
    train = {"a": np.array([0, 0, 0, 1]), "b": np.array([0, 1])}
    uniform = unigram_perplexity(train, np.array([2, 2]), vocab_size=3, smoothing=0.0)
    assert uniform["perplexity"] == np.inf  # never seen in training, no smoothing
    smoothed = unigram_perplexity(train, np.array([0, 1, 2]), vocab_size=3, smoothing=1.0)
    p = np.array([5, 3, 1]) / 9
    assert smoothed["cross_entropy"] == pytest.approx(-np.mean(np.log(p)))
    # The held-out codes' own frequencies never enter: scoring other targets uses the same table.
    assert unigram_perplexity(train, np.array([2]), 3)["perplexity"] == pytest.approx(9.0)


def test_evaluate_codes_scores_every_heldout_code_when_primed():
    model = GPT(
        GPTConfig(vocab_size=5, context_length=4, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1),
        key=jax.random.key(0),
    )
    train, heldout = {"a": np.arange(20) % 5}, {"a": np.arange(9) % 5, "new": np.array([1, 2, 3])}
    primed = evaluate_codes(model, heldout, train=train)
    assert primed["tokens"] == 9 + 2  # "a" primed by its training tail; "new" has no training stream
    bare = evaluate_codes(model, heldout)
    assert bare["tokens"] == 8 + 2 and "unigram_perplexity" not in bare
    assert primed["unigram_perplexity"] == pytest.approx(5.0, rel=1e-6)  # uniform training codes
    assert 0 < primed["perplexity_ratio"] < 10
