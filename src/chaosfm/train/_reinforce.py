"""Horizon objectives of the SFT and RL stages: teacher-forced horizon loss, REINFORCE with a baseline.

Dimension letters: B contexts in a batch, G samples per context, C context codes, H horizon codes,
V vocabulary, P candles per code.

SFT (:func:`horizon_loss`): a window holds ``C + H`` codes; the model reads the first ``C + H - 1``
(teacher forcing: the true codes, never its own samples) and the cross-entropy is averaged over
the predictions of the last ``H`` codes only, so the context codes train nothing.

RL (:func:`rl_loss`): after each context, ``G`` horizons of ``H`` codes are sampled from the
current policy (no gradient through the sampling); a differentiable forward pass of the context
and the sampled codes gives the log-probability of each sample. With the reward ``r`` of each
sample the surrogate (:func:`reinforce_surrogate`) is

    L = -mean_i( A_i * sum_h log pi(x_ih | x_i,<h) ),   A_i = (r_i - mean_batch r) * N / (N - 1),

whose gradient is the REINFORCE estimator (Williams 1992) with the batch mean as the baseline.
The factor ``N / (N - 1)`` makes the batch-mean baseline equal to the leave-one-out mean of the
other ``N - 1`` rewards, which does not depend on the sample it scores, so the estimator stays
unbiased (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free"); a plain batch
mean would shrink the expected gradient by ``(N - 1) / N``. The KL penalty to the SFT model is the
*exact* per-position ``KL(pi || pi_ref)`` over the vocabulary at every sampled horizon position,
summed over the horizon: exact is cheap for small vocabularies and has less variance than the
one-sample estimate ``log pi(x) - log pi_ref(x)``.

Rewards (:data:`REWARDS`): the fraction of sampled codes equal to the true ones
(:func:`token_accuracy_reward`); minus the mean squared difference (in percent) between the
per-code log returns decoded from the sample and the true log returns of the same candles
(:func:`return_mse_reward`); or what trading on the sample would have earned
(:func:`pnl_reward`, :func:`sharpe_reward`): at each horizon code the sample's decoded return
sets a position ``sign(r_hat_h)`` (long, short, or flat at exactly 0), which earns ``sign(r_hat_h)
r_h`` of the true log return ``r_h`` (in percent); ``pnl`` sums that over the horizon, ``sharpe`` is
its mean over its standard deviation across the horizon's codes (0 for a flat or constant P&L).
The trading rewards score direction only, not size, and charge no costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.models import AbstractCodeModel, generate

__all__ = [
    "exact_kl",
    "horizon_loss",
    "reinforce_surrogate",
    "pnl_reward",
    "return_mse_reward",
    "rl_loss",
    "sequence_log_probs",
    "sharpe_reward",
    "token_accuracy_reward",
]


def _logits(model: AbstractCodeModel, codes: Int[Array, " time"], exo: Any) -> Float[Array, "time vocab"]:
    kwargs = {} if exo is None else {"exo": exo}
    return model(codes, **kwargs)[0]


def horizon_loss(
    model: AbstractCodeModel, batch: dict[str, jax.Array], key: Any = None, *, horizon: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy (nats) of the last ``horizon`` codes of each window, teacher forced.

    Args:
        model: the code model.
        batch: ``codes`` ``(B, C + H)`` and, for ``exo_clock`` models, ``exo`` of the same shape.
        key: unused (no dropout); accepted for the loop's signature.
        horizon: H, the codes scored at the end of each window.
    """
    del key
    codes = batch["codes"]
    exo = batch.get("exo")
    inputs, targets = codes[:, :-1], codes[:, 1:]
    exo_inputs = None if exo is None else exo[:, :-1]
    logits = jax.vmap(lambda c, e: _logits(model, c, e))(inputs, exo_inputs)  # (B, C + H - 1, V)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, -horizon:], targets[:, -horizon:])
    hits = jnp.argmax(logits[:, -horizon:], axis=-1) == targets[:, -horizon:]
    return jnp.mean(losses), {"accuracy": jnp.mean(hits)}


def reinforce_surrogate(log_prob_sums: Float[Array, " N"], rewards: Float[Array, " N"]) -> jax.Array:
    """A scalar whose gradient is the REINFORCE estimator with the batch-mean (leave-one-out) baseline.

    Args:
        log_prob_sums: ``log pi(sample_i)`` of each of the N samples, differentiable.
        rewards: the reward of each sample (no gradient is taken through it).

    Returns:
        ``-mean(A * log_prob_sums)`` with ``A = (r - mean r) * N / (N - 1)`` (see the module docstring).
    """
    count = rewards.shape[0]
    if count < 2:
        raise ValueError("the batch-mean baseline needs at least 2 samples")
    rewards = jax.lax.stop_gradient(rewards.astype(jnp.float32))
    advantages = (rewards - jnp.mean(rewards)) * (count / (count - 1))
    return -jnp.mean(advantages * log_prob_sums)


def exact_kl(
    logits: Float[Array, "... vocab"], reference_logits: Float[Array, "... vocab"]
) -> Float[Array, "..."]:
    """``KL(softmax(logits) || softmax(reference_logits))`` in nats, per position (float32)."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(reference_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def sequence_log_probs(
    model: AbstractCodeModel,
    context: Int[Array, " C"],
    samples: Int[Array, "G H"],
    exo: Float[Array, " C"] | None = None,
) -> tuple[Float[Array, "G H"], Float[Array, "G H V"]]:
    """Log-probability of each sampled code given the context and the codes sampled before it.

    The exogenous value over the sampled codes is the last one of the context, held, as
    :func:`chaosfm.models.generate` samples them.

    Returns:
        ``(log pi(x_gh), logits)``: per-code log-probabilities and the logits that scored them.
    """
    size, horizon = samples.shape

    def one(sample):
        sequence = jnp.concatenate([context, sample])[:-1]
        series = None if exo is None else jnp.concatenate([exo, jnp.broadcast_to(exo[-1:], (horizon,))])[:-1]
        logits = _logits(model, sequence, series)[-horizon:]  # (H, V)
        chosen = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), sample[:, None], axis=-1)[:, 0]
        return chosen, logits

    return jax.vmap(one)(samples)


def token_accuracy_reward(samples: Int[Array, "G H"], truth: Int[Array, " H"], **_: Any) -> Float[Array, " G"]:
    """Fraction of the H sampled codes equal to the true codes, per sample."""
    return jnp.mean((samples == truth[None, :]).astype(jnp.float32), axis=-1)


def return_mse_reward(
    samples: Int[Array, "G H"],
    truth: Int[Array, " H"],
    *,
    context: Int[Array, " C"],
    true_returns: Float[Array, " H"],
    decode_returns: Callable[[Int[Array, " n"]], Float[Array, " n"]],
    **_: Any,
) -> Float[Array, " G"]:
    """Minus the mean squared error, in percent², between decoded and true per-code log returns.

    ``decode_returns`` maps a code sequence to the log return of each code; the sample is decoded
    after the context (the tokenizer's decoder is causal, the context fills its receptive field).
    """
    del truth
    decoded = _decoded(samples, context, decode_returns)
    return -jnp.mean((100.0 * (decoded - true_returns[None, :])) ** 2, axis=-1)


def _decoded(
    samples: Int[Array, "G H"],
    context: Int[Array, " C"],
    decode_returns: Callable[[Int[Array, " n"]], Float[Array, " n"]],
) -> Float[Array, "G H"]:
    """Each sample's per-code log returns, decoded after the context (the tokenizer's decoder is
    causal, the context fills its receptive field)."""
    horizon = samples.shape[1]
    return jax.vmap(lambda sample: decode_returns(jnp.concatenate([context, sample]))[-horizon:])(samples)


def _trade_pnl(
    samples: Int[Array, "G H"],
    context: Int[Array, " C"],
    true_returns: Float[Array, " H"],
    decode_returns: Callable[[Int[Array, " n"]], Float[Array, " n"]],
) -> Float[Array, "G H"]:
    """Per sample and horizon code: ``sign(decoded return) * true return``, in percent."""
    return jnp.sign(_decoded(samples, context, decode_returns)) * 100.0 * true_returns[None, :]


def pnl_reward(
    samples: Int[Array, "G H"],
    truth: Int[Array, " H"],
    *,
    context: Int[Array, " C"],
    true_returns: Float[Array, " H"],
    decode_returns: Callable[[Int[Array, " n"]], Float[Array, " n"]],
    **_: Any,
) -> Float[Array, " G"]:
    """The P&L, in percent, of holding ``sign`` of each code's decoded return over that code."""
    del truth
    return jnp.sum(_trade_pnl(samples, context, true_returns, decode_returns), axis=-1)


def sharpe_reward(
    samples: Int[Array, "G H"],
    truth: Int[Array, " H"],
    *,
    context: Int[Array, " C"],
    true_returns: Float[Array, " H"],
    decode_returns: Callable[[Int[Array, " n"]], Float[Array, " n"]],
    **_: Any,
) -> Float[Array, " G"]:
    """Mean over standard deviation (population, across the horizon's codes) of that P&L; 0 when
    the P&L does not vary (a flat sample)."""
    del truth
    pnl = _trade_pnl(samples, context, true_returns, decode_returns)
    mean, std = jnp.mean(pnl, axis=-1), jnp.std(pnl, axis=-1)
    return jnp.where(std > 1e-9, mean / jnp.where(std > 1e-9, std, 1.0), 0.0)


REWARDS: dict[str, Callable[..., jax.Array]] = {
    "token_accuracy": token_accuracy_reward,
    "return_mse": return_mse_reward,
    "pnl": pnl_reward,
    "sharpe": sharpe_reward,
}
"""Reward name -> reward of G sampled horizons; all but ``token_accuracy`` decode returns."""


def _frozen(model: eqx.Module) -> eqx.Module:
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


def rl_loss(
    model: AbstractCodeModel,
    batch: dict[str, jax.Array],
    key: PRNGKeyArray,
    *,
    reference: AbstractCodeModel,
    horizon: int,
    samples: int,
    reward: str,
    kl_coef: float,
    temperature: float = 1.0,
    decode_returns: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE with the batch-mean baseline and an exact KL penalty to ``reference``.

    Args:
        model: the policy being trained.
        batch: ``codes`` ``(B, C + H)`` (context then the true horizon), ``exo`` of the same shape
            for ``exo_clock`` models, and ``returns`` ``(B, C + H)`` (per-code log returns) for
            every reward but ``token_accuracy``.
        key: this step's key (from the loop): the sampling noise.
        reference: the frozen SFT model.
        horizon: H, codes sampled after each context.
        samples: G, horizons sampled per context (the baseline is the mean over all B * G).
        reward: a key of :data:`REWARDS`.
        kl_coef: weight of the KL penalty.
        temperature: sampling temperature of the policy (1 samples the policy itself).
        decode_returns: codes -> per-code log returns, for every reward but ``token_accuracy``.

    Returns:
        The loss and ``reward_mean``, ``reward_std``, ``kl`` and ``surrogate``.
    """
    codes = batch["codes"]
    contexts, truths = codes[:, :-horizon], codes[:, -horizon:]
    exo = batch.get("exo")
    exo_contexts = None if exo is None else exo[:, :-horizon]
    policy = _frozen(model)
    keys = jax.random.split(key, contexts.shape[0])

    def draw(context, series, draw_key):
        return generate(policy, context, horizon, temperature, key=draw_key, exo=series, num_samples=samples)

    drawn = jax.vmap(draw)(contexts, exo_contexts, keys)  # (B, G, H)
    reward_fn = REWARDS[reward]
    true_returns = batch["returns"][:, -horizon:] if "returns" in batch else jnp.zeros(truths.shape)
    rewards = jax.vmap(
        lambda s, t, c, r: reward_fn(s, t, context=c, true_returns=r, decode_returns=decode_returns)
    )(drawn, truths, contexts, true_returns)  # (B, G)

    log_probs, logits = jax.vmap(lambda c, s, e: sequence_log_probs(model, c, s, e))(contexts, drawn, exo_contexts)
    frozen_reference = _frozen(reference)
    _, reference_logits = jax.vmap(lambda c, s, e: sequence_log_probs(frozen_reference, c, s, e))(
        contexts, drawn, exo_contexts
    )
    kl = jnp.mean(jnp.sum(exact_kl(logits, reference_logits), axis=-1))  # per sample, summed over H
    surrogate = reinforce_surrogate(jnp.sum(log_probs, axis=-1).reshape(-1), rewards.reshape(-1))
    loss = surrogate + kl_coef * kl
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "reward_std": jnp.std(rewards),
        "kl": kl,
        "surrogate": surrogate,
    }
    return loss, metrics
