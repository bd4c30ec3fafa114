"""REINFORCE on a toy bandit against the exact policy gradient; the SFT loss, log-probs, KL, decoded returns
(the tokenizer's ``return_decoder``, the RL reward's view of a candle tokenizer)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from chaosfm.models import GPT, GPTConfig
from chaosfm.train import (
    REWARDS,
    exact_kl,
    horizon_loss,
    pnl_reward,
    reinforce_surrogate,
    rl_loss,
    sequence_log_probs,
    sharpe_reward,
)

ARM_MEANS = jnp.array([1.0, 2.0, 0.5, 3.0])  # arm 3 is the best
NOISE = 0.5


def bandit_gradient(logits, key, size, shift=0.0, estimator=reinforce_surrogate):
    """The estimator's gradient for one batch of ``size`` pulls of a softmax policy."""
    pick_key, noise_key = jax.random.split(key)
    arms = jax.random.categorical(pick_key, logits, shape=(size,))
    rewards = ARM_MEANS[arms] + shift + NOISE * jax.random.normal(noise_key, (size,))

    def surrogate(theta):
        return estimator(jax.nn.log_softmax(theta)[arms], rewards)

    return jax.grad(surrogate)(logits)


def exact_policy_gradient(logits):
    """Closed form: d/dtheta sum_a pi(a) r(a) = sum_a pi(a) (r(a) - b) grad log pi(a) = pi * (r - pi.r)."""
    pi = jax.nn.softmax(logits)
    return pi * (ARM_MEANS - jnp.dot(pi, ARM_MEANS))


def many_gradients(logits, size, batches=6000, **kwargs):
    keys = jax.random.split(jax.random.key(1), batches)
    return np.asarray(jax.jit(jax.vmap(lambda k: bandit_gradient(logits, k, size, **kwargs)))(keys))


@pytest.mark.parametrize("size", [2, 8])
def test_estimator_is_unbiased_for_the_exact_policy_gradient(size):
    logits = jnp.array([0.3, -0.2, 0.5, -0.4])
    grads = -many_gradients(logits, size)  # the surrogate is a loss: minus its gradient ascends
    mean, error = grads.mean(axis=0), grads.std(axis=0) / np.sqrt(grads.shape[0])
    exact = np.asarray(exact_policy_gradient(logits))
    assert np.all(np.abs(mean - exact) < 4 * error + 1e-6), (mean, exact, error)
    # A plain batch-mean baseline would give (N-1)/N of it: with N = 2, half; that is far outside the error.
    if size == 2:
        assert np.max(np.abs(mean - 0.5 * exact)) > 8 * np.max(error)


def test_baseline_cuts_the_variance_of_shifted_rewards():
    logits = jnp.array([0.3, -0.2, 0.5, -0.4])

    def no_baseline(log_probs, rewards):
        return -jnp.mean(rewards * log_probs)

    with_baseline = -many_gradients(logits, 8, batches=3000, shift=100.0)
    plain = -many_gradients(logits, 8, batches=3000, shift=100.0, estimator=no_baseline)
    exact = np.asarray(exact_policy_gradient(logits))
    # Both are unbiased (a constant shift changes no gradient) ...
    for grads in (with_baseline, plain):
        error = grads.std(axis=0) / np.sqrt(grads.shape[0])
        assert np.all(np.abs(grads.mean(axis=0) - exact) < 4 * error + 1e-6)
    # ... but without the baseline the shift of 100 multiplies the spread.
    assert np.all(plain.var(axis=0) > 100 * with_baseline.var(axis=0))


def test_optimisation_converges_to_the_best_arm():
    logits = jnp.zeros(4)
    optimizer = optax.adam(0.05)
    state = optimizer.init(logits)

    @jax.jit
    def step(logits, state, key):
        updates, state = optimizer.update(bandit_gradient(logits, key, 16), state)
        return optax.apply_updates(logits, updates), state

    for key in jax.random.split(jax.random.key(2), 300):
        logits, state = step(logits, state, key)
    assert float(jax.nn.softmax(logits)[3]) > 0.9


def test_exact_kl_matches_scipy():
    rng = np.random.default_rng(0)
    p_logits, q_logits = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    got = np.asarray(exact_kl(jnp.asarray(p_logits), jnp.asarray(q_logits)))
    softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
    expected = [stats.entropy(p, q) for p, q in zip(softmax(p_logits), softmax(q_logits))]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.fixture(scope="module")
def gpt():
    model = GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1), key=jax.random.key(0))
    # Some projections start at zero (the residual stream starts as the identity); give every weight
    # a value so that each code of the context moves the logits, as in a trained model.
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


def test_horizon_loss_scores_the_last_codes_only(gpt):
    codes = jax.random.randint(jax.random.key(3), (3, 12), 0, 11)
    score = eqx.filter_jit(lambda model, codes: horizon_loss(model, {"codes": codes}, horizon=4))
    loss, metrics = score(gpt, codes)
    logits = np.asarray(eqx.filter_jit(jax.vmap(lambda c: gpt(c)[0]))(codes[:, :-1]))  # (3, 11, V)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.asarray(codes[:, 1:])
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(loss), nll[:, -4:].mean(), rtol=1e-5)
    # Changing a code that is only context moves the loss (it conditions) but is never a target.
    changed = codes.at[:, 3].set((codes[:, 3] + 1) % 11)
    assert float(score(gpt, changed)[0]) != pytest.approx(float(loss), rel=1e-6)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_sequence_log_probs_match_prefix_by_prefix(gpt):
    context = jnp.array([1, 2, 3, 4, 5], jnp.int32)
    samples = jnp.array([[6, 7, 8], [0, 10, 2]], jnp.int32)
    got, _ = eqx.filter_jit(sequence_log_probs)(gpt, context, samples)
    last = eqx.filter_jit(lambda model, prefix: jax.nn.log_softmax(model(prefix)[0][-1]))
    for g, sample in enumerate(np.asarray(samples)):
        for h in range(3):
            prefix = jnp.concatenate([context, jnp.asarray(sample[:h], jnp.int32)])
            expected = last(gpt, prefix)[sample[h]]
            assert float(got[g, h]) == pytest.approx(float(expected), abs=1e-5)


def test_decoded_returns_match_the_tokenizer_decode():
    from chaosfm.data import load
    from chaosfm.tokenizers import FSQConfig, FSQTokenizer

    frame = load("sp500").iloc[:600].reset_index(drop=True)
    small = {"width": 8, "decoder_width": 8, "dilations": (1, 2), "window": 32, "batch_size": 4}
    tokenizer = FSQTokenizer(FSQConfig(levels=(4, 4), **small))
    tokenizer.fit(frame, key=jax.random.key(0), steps=3)
    codes = jnp.asarray(tokenizer.encode(frame)[:40])
    got = np.asarray(tokenizer.return_decoder()(codes))
    index = list(tokenizer.value_names).index("symlog_return")
    symlog = tokenizer.decode(np.asarray(codes))[:, index]
    expected = np.sign(symlog) * np.expm1(np.abs(symlog)) / 100.0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_a_bins_tokenizer_has_no_return_decoder():
    import pandas as pd

    from chaosfm._config import ConfigError
    from chaosfm.data import validate
    from chaosfm.tokenizers import BinConfig, BinTokenizer

    t = np.arange(200) * 0.05
    frame = validate(pd.DataFrame({"asset": "p", "timestamp": t, "x0": np.sin(t), "x1": 2 + np.cos(t)}))
    tokenizer = BinTokenizer(BinConfig(vocab_size=34, kind="uniform"))
    tokenizer.fit(frame, key=jax.random.key(0))
    with pytest.raises(ConfigError, match="decodes no returns.*candle tokenizer"):
        tokenizer.return_decoder()


def _decode(codes):
    """A stand-in return decoder: code k is a return of (k - 2)%, so code 2 is flat."""
    return (codes.astype(jnp.float32) - 2.0) / 100.0


def test_trading_rewards_match_a_hand_worked_case():
    context = jnp.asarray([1, 3], jnp.int32)
    samples = jnp.asarray([[3, 3, 3, 3], [0, 4, 1, 3], [2, 2, 2, 2]], jnp.int32)  # all long; mixed; flat
    true = jnp.asarray([0.01, -0.02, 0.005, 0.0])  # log returns of the four horizon codes
    kwargs = dict(context=context, true_returns=true, decode_returns=_decode)
    truth = jnp.zeros(4, jnp.int32)
    # Positions sign(k - 2): [+,+,+,+], [-,+,-,+], [0,0,0,0]; P&L in percent per code.
    pnl = np.array([[1.0, -2.0, 0.5, 0.0], [-1.0, -2.0, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(pnl_reward(samples, truth, **kwargs)), pnl.sum(axis=1), rtol=1e-6)
    sharpe = [pnl[0].mean() / pnl[0].std(), pnl[1].mean() / pnl[1].std(), 0.0]
    np.testing.assert_allclose(np.asarray(sharpe_reward(samples, truth, **kwargs)), sharpe, rtol=1e-5)
    assert {"pnl", "sharpe"} <= set(REWARDS)


@pytest.mark.parametrize("reward", ["pnl", "sharpe"])
def test_the_rl_loss_takes_a_trading_reward(gpt, reward):
    codes = jax.random.randint(jax.random.key(0), (2, 9), 0, gpt.config.vocab_size)
    returns = 0.01 * jax.random.normal(jax.random.key(1), (2, 9))
    loss_fn = lambda m: rl_loss(m, {"codes": codes, "returns": returns}, jax.random.key(2), reference=gpt,  # noqa: E731
                                horizon=3, samples=4, reward=reward, kl_coef=0.05, decode_returns=_decode)
    (loss, metrics), grads = eqx.filter_jit(eqx.filter_value_and_grad(loss_fn, has_aux=True))(gpt)
    assert np.isfinite(float(loss)) and np.isfinite(float(metrics["reward_mean"]))
    assert float(metrics["reward_std"]) > 0  # the samples differ in what they earn
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
