"""TD-MPC2: a latent world model with distributional (quantile) critics, a policy prior, and
planning with MPPI in its latent space (Hansen, Su & Wang 2024, "TD-MPC2: Scalable, Robust World
Models for Continuous Control", ICLR).

The world model (their Sec. 3, Eq. 2) has five parts, each an MLP of ``Linear -> LayerNorm -> Mish``
layers processing one example (batch with ``jax.vmap``):

* encoder ``z = h(o)``: an MLP whose output goes through SimNorm (:func:`simnorm`: a softmax over
  each group of ``simnorm_dim`` coordinates), or, with ``encoder="frozen"``, the observation itself
  (a frozen pretrained JEPA's embedding passed in as the observation) under ``stop_gradient``;
* latent dynamics ``z' = d(z, a)``, SimNorm on its output too;
* reward ``R(z, a)``, a scalar (regressed by squared error; TD-MPC2 uses a two-hot cross-entropy);
* ``num_q`` critics ``Q_k(z, a)``, each ``N`` quantile atoms of the return (QR-DQN, Dabney et al.
  2018, in place of TD-MPC2's two-hot value bins), with an EMA copy of them as target critics;
* a policy prior ``pi(z, alpha)``, a Gaussian squashed by ``tanh`` into ``[-1, 1]^A``; with
  ``alpha_input`` the CVaR level ``alpha`` it is trained for is one more input, so one policy acts
  risk-averse or risk-neutral as the level of the moment asks (dynamic CVaR); without, it ignores
  ``alpha`` (the Lorenz task's single fixed level).

The losses on one sub-trajectory ``(o_0..o_H, a_0..a_{H-1}, r_0..r_{H-1})`` from replay (their
Eq. 3), with ``z_0 = h(o_0)``, ``z_{t+1} = d(z_t, a_t)`` and ``w_t = rho^t``:

    consistency = (1/H) sum_t w_t mean_l (z_{t+1} - sg(h(o_{t+1})))_l^2
    reward      = (1/H) sum_t w_t (R(z_t, a_t) - r_t)^2
    td          = (1/(H K)) sum_t w_t sum_k QH(Q_k(z_t, a_t), r_t + gamma * Qbar(sg(h(o_{t+1})), a'_{t+1}))

``QH`` is the quantile Huber loss (:func:`quantile_huber_loss`), ``a'`` a sample of ``pi`` at the
sub-trajectory's ``alpha``, and
``Qbar`` the atoms of 2 target critics drawn at random, each sorted, then reduced atom by atom
(``target_reduce``: ``min``, pessimistic as TD-MPC2's min over two Q values, or ``mean``). The model
minimises ``consistency_coef * consistency + reward_coef * reward + value_coef * td``. The policy
(their Eq. 4), with the critics frozen and ``z_t`` under ``stop_gradient``, minimises

    (1/(H+1)) sum_{t=0..H} w_t (entropy_coef * log pi(a_t | z_t, alpha) - CVaR_alpha(Qavg(z_t, a_t)) / S)

with ``a_t ~ pi(z_t, alpha)``, ``Qavg`` the atom-by-atom mean of the sorted atoms of all ``num_q`` critics
and ``S`` a running scale of the critic's values (their 5th-95th percentile range, as TD-MPC2's
``RunningScale``). ``alpha`` is an input: :func:`cvar_alpha` maps the Multiverse Crossing
convergence score to it (and to a no-trade flag).

:func:`tdmpc2_plan` plans with :func:`mppi_plan` in the latent space: dynamics ``d``, reward ``R``,
terminal value ``CVaR_alpha(Qavg(z, mode(pi(z, alpha))))``, and ``pi``'s rollouts at ``alpha`` among
the candidates.

Dimension letters: O observation width, A action width, L latent width, K critics, N quantile
atoms, H sub-trajectory length, T decisions, B batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from chaosfm.agents._quantile import cvar_from_quantiles, quantile_huber_loss, quantile_midpoints

__all__ = [
    "TDMPC2Batch",
    "TDMPC2Config",
    "TDMPC2Policy",
    "TDMPC2State",
    "TDMPC2WorldModel",
    "consistency_loss",
    "cvar_alpha",
    "ensemble_cvar",
    "quantile_td_loss",
    "reward_loss",
    "simnorm",
    "tdmpc2_init",
    "tdmpc2_policy_loss",
    "tdmpc2_update",
    "tdmpc2_world_model_loss",
    "td_target",
]

_REDUCTIONS = {"min": jnp.min, "mean": jnp.mean}  # how the target subset's sorted atoms combine


@dataclass(frozen=True)
class TDMPC2Config:
    """Shapes, losses and the risk map of a TD-MPC2 agent; saved beside the weights."""

    obs_dim: int  # O, the observation width (a JEPA's embedding width with encoder="frozen")
    action_dim: int  # A; actions live in [-1, 1]^A, the caller scales them to the plant's bounds
    latent_dim: int = 64  # L, the latent width (TD-MPC2: 512); with encoder="frozen" it must equal obs_dim
    simnorm_dim: int = 8  # SimNorm group size (TD-MPC2: 8): each group of the latent is a softmax
    hidden: int = 128  # width of every MLP's hidden layers (TD-MPC2: 512)
    hidden_layers: int = 2  # hidden layers of every MLP (TD-MPC2: 2 for dynamics, reward, critics)
    encoder: str = "mlp"  # "mlp": h is learnt; "frozen": the observation is a pretrained embedding, h = identity
    num_q: int = 5  # K critics in the ensemble (TD-MPC2: 5)
    num_quantiles: int = 32  # N atoms per critic; a CVaR at level alpha averages the lowest alpha N of them
    target_subset: int = 2  # target critics drawn at random per batch for the TD target (TD-MPC2: 2)
    target_reduce: str = "min"  # how the subset's sorted atoms combine: "min" (pessimistic, TD-MPC2) or "mean"
    kappa: float = 1.0  # Huber threshold of the quantile loss, in (scaled) reward units
    horizon: int = 3  # H, sub-trajectory length of the losses (TD-MPC2: 3)
    rho: float = 0.5  # per-step weight decay of the losses along the sub-trajectory (TD-MPC2: 0.5)
    discount: float = 0.95  # gamma of the TD target; the planner must use the same
    consistency_coef: float = 20.0  # weight of the latent consistency loss (TD-MPC2: 20)
    reward_coef: float = 0.1  # weight of the reward loss (TD-MPC2: 0.1)
    value_coef: float = 0.1  # weight of the TD loss (TD-MPC2: 0.1)
    entropy_coef: float = 1e-4  # weight of the policy's log-probability: the entropy bonus (TD-MPC2: 1e-4)
    learning_rate: float = 3e-4  # Adam step size of model and policy (TD-MPC2: 3e-4)
    encoder_lr_scale: float = 0.3  # the encoder learns this much slower, so targets drift slowly (TD-MPC2: 0.3)
    grad_clip_norm: float = 20.0  # global-norm clip of each update (TD-MPC2: 20)
    target_tau: float = 0.01  # EMA rate of the target critics (TD-MPC2: 0.01)
    scale_tau: float = 0.01  # EMA rate of the running value scale that normalises the policy loss
    log_std_min: float = -10.0  # lower bound of the policy's log standard deviation (TD-MPC2: -10)
    log_std_max: float = 2.0  # upper bound of the policy's log standard deviation (TD-MPC2: 2)
    no_trade: float = 0.2  # below this convergence the action is 0 (flat): futures too unsettled to act on
    convergence_low: float = 0.3  # convergence at which alpha is alpha_min (most risk-averse)
    convergence_high: float = 0.8  # convergence at which alpha reaches alpha_max
    alpha_min: float = 0.1  # CVaR level at low convergence: the mean of the worst 10% of returns
    alpha_max: float = 1.0  # CVaR level at high convergence: 1 is the plain mean (risk-neutral)
    alpha_input: bool = False  # the policy sees alpha as an input: one policy per risk level (dynamic CVaR)

    def __post_init__(self) -> None:
        positive = ("obs_dim", "action_dim", "latent_dim", "simnorm_dim", "hidden", "hidden_layers", "num_q",
                    "num_quantiles", "target_subset", "horizon")
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in positive
                    if getattr(self, name) < 1]
        if self.encoder not in _ENCODER_KINDS:
            problems.append(f"encoder: must be one of {sorted(_ENCODER_KINDS)}, got {self.encoder!r}")
        if self.encoder == "frozen" and self.latent_dim != self.obs_dim:
            problems.append(f"latent_dim: must equal obs_dim ({self.obs_dim}) with encoder='frozen', got "
                            f"{self.latent_dim}")
        if self.encoder == "mlp" and self.latent_dim % max(self.simnorm_dim, 1):
            problems.append(f"latent_dim: must be a multiple of simnorm_dim ({self.simnorm_dim}), got "
                            f"{self.latent_dim}")
        if self.target_subset > self.num_q:
            problems.append(f"target_subset: must be <= num_q ({self.num_q}), got {self.target_subset}")
        if self.target_reduce not in _REDUCTIONS:
            problems.append(f"target_reduce: must be one of {sorted(_REDUCTIONS)}, got {self.target_reduce!r}")
        for name in ("rho", "discount", "target_tau", "scale_tau", "encoder_lr_scale"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name}: must lie in (0, 1], got {getattr(self, name)}")
        for name in ("kappa", "consistency_coef", "reward_coef", "value_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "grad_clip_norm"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if not self.log_std_min < self.log_std_max:
            problems.append(f"log_std_min, log_std_max: must satisfy log_std_min < log_std_max, got "
                            f"{self.log_std_min}, {self.log_std_max}")
        if not 0 <= self.no_trade <= self.convergence_low < self.convergence_high <= 1:
            problems.append(f"no_trade, convergence_low, convergence_high: must satisfy 0 <= no_trade <= "
                            f"convergence_low < convergence_high <= 1, got {self.no_trade}, "
                            f"{self.convergence_low}, {self.convergence_high}")
        if not 0 < self.alpha_min <= self.alpha_max <= 1:
            problems.append(f"alpha_min, alpha_max: must satisfy 0 < alpha_min <= alpha_max <= 1, got "
                            f"{self.alpha_min}, {self.alpha_max}")
        if problems:
            raise ValueError("TDMPC2Config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "TDMPC2Config":
        return dataclasses.replace(self, **changes)


# ---- the risk map ------------------------------------------------------------------------------


def cvar_alpha(config: TDMPC2Config, convergence: Float[Array, "..."] | float) -> tuple[
        Float[Array, "..."], Bool[Array, "..."]]:
    """The CVaR level and the trade flag for a Multiverse Crossing convergence score in [0, 1].

    ``alpha = alpha_min + (alpha_max - alpha_min) * clip((c - convergence_low) / (convergence_high -
    convergence_low), 0, 1)``: piecewise linear, flat at ``alpha_min`` up to ``convergence_low`` and
    at ``alpha_max`` from ``convergence_high``. ``trade = c >= no_trade``: below it the action is 0.
    """
    c = jnp.asarray(convergence, jnp.float32)
    fraction = jnp.clip((c - config.convergence_low) / (config.convergence_high - config.convergence_low), 0.0, 1.0)
    return config.alpha_min + (config.alpha_max - config.alpha_min) * fraction, c >= config.no_trade


# ---- modules ------------------------------------------------------------------------------------


def simnorm(z: Float[Array, " L"], group_size: int) -> Float[Array, " L"]:
    """Simplicial normalisation (TD-MPC2 Sec. 3, after Lavoie et al. 2022): a softmax over each
    consecutive group of ``group_size`` coordinates, so every group is a point of a simplex."""
    groups = z.reshape(-1, group_size)  # (L / group_size, group_size)
    return jax.nn.softmax(groups, axis=-1).reshape(z.shape)


class _NormedMLP(eqx.Module):
    """``hidden_layers`` of ``Linear -> LayerNorm -> Mish`` then a plain ``Linear`` head."""

    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm, ...]
    head: eqx.nn.Linear

    def __init__(self, fan_in: int, hidden: int, depth: int, fan_out: int, *, key: PRNGKeyArray):
        keys = jax.random.split(key, depth + 1)
        sizes = [fan_in] + [hidden] * depth
        self.layers = tuple(eqx.nn.Linear(i, o, key=k) for i, o, k in zip(sizes[:-1], sizes[1:], keys[:-1]))
        self.norms = tuple(eqx.nn.LayerNorm(hidden) for _ in range(depth))
        self.head = eqx.nn.Linear(hidden, fan_out, key=keys[-1])

    def __call__(self, x: Float[Array, " fan_in"]) -> Float[Array, " fan_out"]:
        h = jnp.asarray(x, jnp.float32)
        for layer, norm in zip(self.layers, self.norms):
            h = jax.nn.mish(norm(layer(h)))
        return self.head(h)


class _MLPEncoder(eqx.Module):
    mlp: _NormedMLP
    group_size: int = eqx.field(static=True)

    def __init__(self, config: TDMPC2Config, *, key: PRNGKeyArray):
        self.mlp = _NormedMLP(config.obs_dim, config.hidden, config.hidden_layers, config.latent_dim, key=key)
        self.group_size = config.simnorm_dim

    def __call__(self, obs: Float[Array, " O"]) -> Float[Array, " L"]:
        return self.normalise(self.mlp(obs))

    def normalise(self, z: Float[Array, " L"]) -> Float[Array, " L"]:
        """SimNorm: the latent space the dynamics must stay in."""
        return simnorm(z, self.group_size)


class _FrozenEncoder(eqx.Module):
    """The observation is already a latent (a frozen pretrained encoder's embedding)."""

    def __init__(self, config: TDMPC2Config, *, key: PRNGKeyArray):
        del config, key

    def __call__(self, obs: Float[Array, " O"]) -> Float[Array, " L"]:
        return jax.lax.stop_gradient(jnp.asarray(obs, jnp.float32))

    def normalise(self, z: Float[Array, " L"]) -> Float[Array, " L"]:
        """The identity: the pretrained latents are not on simplices."""
        return z


_ENCODER_KINDS = {"mlp": _MLPEncoder, "frozen": _FrozenEncoder}


def _ensemble_apply(critics: _NormedMLP, x: Float[Array, " F"]) -> Float[Array, "K N"]:
    params, static = eqx.partition(critics, eqx.is_array)
    return jax.vmap(lambda p: eqx.combine(p, static)(x))(params)


class TDMPC2WorldModel(eqx.Module):
    """Encoder, latent dynamics, reward and the critic ensemble (the policy is :class:`TDMPC2Policy`)."""

    config: TDMPC2Config = eqx.field(static=True)
    encoder: eqx.Module
    dynamics: _NormedMLP
    reward_head: _NormedMLP
    critics: _NormedMLP  # K stacked critics: every array has a leading K axis

    def __init__(self, config: TDMPC2Config, *, key: PRNGKeyArray):
        encoder_key, dynamics_key, reward_key, critic_key = jax.random.split(key, 4)
        width, depth, joint = config.hidden, config.hidden_layers, config.latent_dim + config.action_dim
        self.config = config
        self.encoder = _ENCODER_KINDS[config.encoder](config, key=encoder_key)
        self.dynamics = _NormedMLP(joint, width, depth, config.latent_dim, key=dynamics_key)
        self.reward_head = _NormedMLP(joint, width, depth, 1, key=reward_key)
        self.critics = eqx.filter_vmap(lambda k: _NormedMLP(joint, width, depth, config.num_quantiles, key=k))(
            jax.random.split(critic_key, config.num_q))

    def encode(self, obs: Float[Array, " O"]) -> Float[Array, " L"]:
        """``h(o)``."""
        return self.encoder(obs)

    def next(self, z: Float[Array, " L"], action: Float[Array, " A"]) -> Float[Array, " L"]:
        """``d(z, a)``, normalised as the encoder normalises (SimNorm; none with the frozen encoder)."""
        return self.encoder.normalise(self.dynamics(jnp.concatenate([z, action])))

    def reward(self, z: Float[Array, " L"], action: Float[Array, " A"]) -> Float[Array, ""]:
        """``R(z, a)``."""
        return self.reward_head(jnp.concatenate([z, action]))[0]

    def quantiles(self, z: Float[Array, " L"], action: Float[Array, " A"],
                  critics: _NormedMLP | None = None) -> Float[Array, "K N"]:
        """The ``N`` atoms of each of the ``K`` critics (of ``critics``, e.g. the targets, if given)."""
        return _ensemble_apply(self.critics if critics is None else critics, jnp.concatenate([z, action]))


class TDMPC2Policy(eqx.Module):
    """``pi(z, alpha)``: a Gaussian of mean ``mu(z, alpha)`` and log deviation squashed into
    ``[log_std_min, log_std_max]``, the sample passed through ``tanh`` (TD-MPC2 Sec. 3, as in SAC).

    With ``config.alpha_input`` the CVaR level ``alpha`` in (0, 1] is concatenated to the latent, so
    the action depends on it; without, ``alpha`` is ignored (and the network's width is the
    latent's, as weights saved before the option have it)."""

    config: TDMPC2Config = eqx.field(static=True)
    mlp: _NormedMLP

    def __init__(self, config: TDMPC2Config, *, key: PRNGKeyArray):
        self.config = config
        width = config.latent_dim + int(config.alpha_input)
        self.mlp = _NormedMLP(width, config.hidden, config.hidden_layers, 2 * config.action_dim, key=key)

    def _moments(self, z, alpha):
        if self.config.alpha_input:
            z = jnp.concatenate([z, jnp.reshape(jnp.asarray(alpha, z.dtype), (1,))])
        mu, raw = jnp.split(self.mlp(z), 2)
        c = self.config
        return mu, c.log_std_min + 0.5 * (c.log_std_max - c.log_std_min) * (jnp.tanh(raw) + 1.0)

    def sample(self, z: Float[Array, " L"], alpha: float | Float[Array, ""], *, key: PRNGKeyArray
               ) -> tuple[Float[Array, " A"], Float[Array, ""]]:
        """An action in ``[-1, 1]^A`` for the CVaR level ``alpha`` and its log-density (with the
        ``tanh`` change of variables)."""
        mu, log_std = self._moments(z, alpha)
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        u = mu + jnp.exp(log_std) * eps
        gaussian = jnp.sum(-0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi))
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
        squash = jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)))
        return jnp.tanh(u), gaussian - squash

    def mode(self, z: Float[Array, " L"], alpha: float | Float[Array, ""]) -> Float[Array, " A"]:
        """``tanh(mu(z, alpha))``: the deterministic action."""
        return jnp.tanh(self._moments(z, alpha)[0])

    def __call__(self, z: Float[Array, " L"], alpha: float | Float[Array, ""], *, key: PRNGKeyArray
                 ) -> Float[Array, " A"]:
        return self.sample(z, alpha, key=key)[0]


def ensemble_cvar(quantiles: Float[Array, "... K N"], alpha: float | Float[Array, "..."]) -> Float[Array, "..."]:
    """``CVaR_alpha`` of the ensemble-averaged atoms: each critic's atoms sorted, averaged atom by
    atom over the ``K`` critics (the quantile function of their Wasserstein barycentre), then
    :func:`cvar_from_quantiles`. ``alpha`` may have the batch shape ``...``."""
    averaged = jnp.mean(jnp.sort(quantiles, axis=-1), axis=-2)  # (..., N)
    if isinstance(alpha, (int, float)):
        return cvar_from_quantiles(averaged, alpha)
    return jnp.vectorize(cvar_from_quantiles, signature="(n),()->()")(averaged, jnp.asarray(alpha, averaged.dtype))


# ---- losses -------------------------------------------------------------------------------------


def _weights(rho: float, length: int) -> Float[Array, " T"]:
    return jnp.asarray(rho, jnp.float32) ** jnp.arange(length, dtype=jnp.float32)


def consistency_loss(predicted: Float[Array, "H L"], target: Float[Array, "H L"], rho: float) -> Float[Array, ""]:
    """``(1/H) sum_t rho^t mean_l (predicted_t - sg(target_t))_l^2`` (TD-MPC2 Eq. 3, first term)."""
    error = jnp.mean((predicted.astype(jnp.float32) - jax.lax.stop_gradient(target).astype(jnp.float32)) ** 2, -1)
    return jnp.sum(_weights(rho, error.shape[0]) * error) / error.shape[0]


def reward_loss(predicted: Float[Array, " H"], target: Float[Array, " H"], rho: float) -> Float[Array, ""]:
    """``(1/H) sum_t rho^t (predicted_t - target_t)^2`` (TD-MPC2 Eq. 3, second term, by squared error)."""
    error = (predicted.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
    return jnp.sum(_weights(rho, error.shape[0]) * error) / error.shape[0]


def quantile_td_loss(predicted: Float[Array, "K H N"], target: Float[Array, "H N"], rho: float,
                     kappa: float) -> Float[Array, ""]:
    """``(1/(H K)) sum_t rho^t sum_k QH(predicted_kt, sg(target_t))`` with QH the quantile Huber loss
    at the midpoints ``tau_i = (2i + 1) / 2N`` (TD-MPC2 Eq. 3, third term, on quantiles)."""
    taus = quantile_midpoints(predicted.shape[-1])
    target = jax.lax.stop_gradient(target.astype(jnp.float32))
    per_step = jax.vmap(jax.vmap(lambda p, t: quantile_huber_loss(p, t, taus, kappa), (0, 0)), (0, None))(
        predicted.astype(jnp.float32), target)  # (K, H)
    horizon = predicted.shape[1]
    return jnp.sum(_weights(rho, horizon)[None, :] * per_step) / (horizon * predicted.shape[0])


def td_target(reward: Float[Array, " H"], next_quantiles: Float[Array, "S H N"], discount: float,
              reduce: str) -> Float[Array, "H N"]:
    """``r_t + discount * Qbar_t``: ``Qbar`` the ``S`` target critics' sorted atoms reduced atom by atom
    (``"min"`` or ``"mean"`` over the subset), under ``stop_gradient``."""
    ordered = jnp.sort(next_quantiles.astype(jnp.float32), axis=-1)
    combined = _REDUCTIONS[reduce](ordered, axis=0)
    return jax.lax.stop_gradient(reward.astype(jnp.float32)[:, None] + discount * combined)


class TDMPC2Batch(NamedTuple):
    """A sub-trajectory from replay (a batch adds a leading ``B`` axis to each field).

    Attributes:
        obs: ``(H + 1, O)`` observations ``o_0 .. o_H``.
        action: ``(H, A)`` actions ``a_0 .. a_{H-1}`` in ``[-1, 1]``.
        reward: ``(H,)`` rewards ``r_t`` of taking ``a_t`` at ``o_t``.
    """

    obs: Float[Array, "H1 O"]
    action: Float[Array, "H A"]
    reward: Float[Array, " H"]


def tdmpc2_world_model_loss(
    model: TDMPC2WorldModel, target_critics: _NormedMLP, policy: TDMPC2Policy, batch: TDMPC2Batch,
    alpha: float | Float[Array, " B"], *, key: PRNGKeyArray,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The model's loss (module docstring) averaged over a batch ``(B, ...)`` of sub-trajectories,
    the TD target's next actions drawn from the policy at each sub-trajectory's CVaR level ``alpha``
    (one for all or one per sub-trajectory).

    Returns:
        The total loss and metrics: ``consistency``, ``reward``, ``td``, ``total`` and ``latents``
        ``(B, H + 1, L)``, the rolled-out ``z_t`` the policy is trained on.
    """
    config = model.config
    subset_key, policy_key = jax.random.split(key)
    subset = jax.random.choice(subset_key, config.num_q, (config.target_subset,), replace=False)
    chosen = jax.tree_util.tree_map(lambda leaf: leaf[subset], eqx.filter(target_critics, eqx.is_array))
    chosen = eqx.combine(chosen, eqx.filter(target_critics, eqx.is_array, inverse=True))
    frozen_policy = jax.lax.stop_gradient(policy)

    def one(item: TDMPC2Batch, item_key, level):
        next_z = jax.lax.stop_gradient(jax.vmap(model.encode)(item.obs[1:]))  # (H, L)

        def advance(z, action):
            nxt = model.next(z, action)
            return nxt, nxt

        z0 = model.encode(item.obs[0])
        _, rolled = jax.lax.scan(advance, z0, item.action)  # (H, L)
        latents = jnp.concatenate([z0[None], rolled], axis=0)  # (H + 1, L)
        consistency = consistency_loss(rolled, next_z, config.rho)
        rewards = jax.vmap(model.reward)(latents[:-1], item.action)
        next_actions = jax.vmap(lambda z, k: frozen_policy.sample(z, level, key=k)[0])(
            next_z, jax.random.split(item_key, config.horizon))
        next_q = jax.vmap(lambda z, a: model.quantiles(z, a, chosen))(next_z, next_actions)  # (H, S, N)
        target = td_target(item.reward, jnp.swapaxes(next_q, 0, 1), config.discount, config.target_reduce)
        q = jax.vmap(model.quantiles)(latents[:-1], item.action)  # (H, K, N)
        td = quantile_td_loss(jnp.swapaxes(q, 0, 1), target, config.rho, config.kappa)
        return consistency, reward_loss(rewards, item.reward, config.rho), td, latents

    keys = jax.random.split(policy_key, batch.reward.shape[0])
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), batch.reward.shape[:1])
    consistency, reward, td, latents = jax.vmap(one)(batch, keys, alpha)
    consistency, reward, td = jnp.mean(consistency), jnp.mean(reward), jnp.mean(td)
    total = config.consistency_coef * consistency + config.reward_coef * reward + config.value_coef * td
    return total, {"consistency": consistency, "reward": reward, "td": td, "total": total, "latents": latents}


def tdmpc2_policy_loss(
    policy: TDMPC2Policy, model: TDMPC2WorldModel, latents: Float[Array, "B T L"],
    alpha: float | Float[Array, " B"], value_scale: float | Float[Array, ""], *, key: PRNGKeyArray,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The policy's loss (module docstring, TD-MPC2 Eq. 4 with ``CVaR_alpha`` in place of ``Q``):
    the critics and the latents are frozen (``stop_gradient``), only ``policy`` receives a gradient.

    Args:
        policy: the prior being trained.
        model: the world model whose critics score the actions.
        latents: ``(B, T, L)`` latents (the model loss's rolled-out ``z_0 .. z_H``).
        alpha: the CVaR level, one for all or one per trajectory.
        value_scale: ``S``, the divisor of the CVaR (clipped below at 1).
        key: randomness of the actions.

    Returns:
        The loss and metrics: ``policy``, ``cvar`` ``(B, T)`` and ``entropy`` (mean ``-log pi``).
    """
    config = policy.config
    frozen = jax.lax.stop_gradient(model)
    latents = jax.lax.stop_gradient(latents)
    batch, length = latents.shape[:2]
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (batch,))
    keys = jax.random.split(key, batch * length).reshape(batch, length)

    def one(z, k, level):
        action, log_prob = policy.sample(z, level, key=k)
        return ensemble_cvar(frozen.quantiles(z, action), level), log_prob

    cvar, log_prob = jax.vmap(jax.vmap(one, (0, 0, None)), (0, 0, 0))(latents, keys, alpha)  # (B, T) each
    scale = jnp.maximum(jax.lax.stop_gradient(jnp.asarray(value_scale, jnp.float32)), 1.0)
    per_step = config.entropy_coef * log_prob - cvar / scale  # (B, T)
    loss = jnp.mean(jnp.sum(_weights(config.rho, length)[None, :] * per_step, axis=-1) / length)
    return loss, {"policy": loss, "cvar": cvar, "entropy": -jnp.mean(log_prob)}


# ---- state and the update -----------------------------------------------------------------------


class TDMPC2State(NamedTuple):
    """Everything a TD-MPC2 learner carries between updates.

    Attributes:
        model: the world model (encoder, dynamics, reward, critics).
        policy: the policy prior.
        target_critics: the EMA of ``model.critics``.
        model_opt_state: Adam's state over the model's arrays.
        policy_opt_state: Adam's state over the policy's arrays.
        value_scale: the running 5th-95th percentile range of the critic's CVaR.
        step: updates taken (int32).
    """

    model: TDMPC2WorldModel
    policy: TDMPC2Policy
    target_critics: _NormedMLP
    model_opt_state: Any
    policy_opt_state: Any
    value_scale: Float[Array, ""]
    step: Any


def _model_optimizer(config: TDMPC2Config) -> optax.GradientTransformation:
    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "encoder" if getattr(path[0], "name", None) == "encoder" else "rest", params)

    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.multi_transform(
        {"encoder": optax.adam(config.learning_rate * config.encoder_lr_scale),
         "rest": optax.adam(config.learning_rate)}, labels))


def _policy_optimizer(config: TDMPC2Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.adam(config.learning_rate))


def tdmpc2_init(config: TDMPC2Config, *, key: PRNGKeyArray) -> TDMPC2State:
    """A fresh learner: target critics equal to the critics, optimisers at rest, value scale 1."""
    model_key, policy_key = jax.random.split(key)
    model = TDMPC2WorldModel(config, key=model_key)
    policy = TDMPC2Policy(config, key=policy_key)
    return TDMPC2State(
        model, policy, model.critics,
        _model_optimizer(config).init(eqx.filter(model, eqx.is_inexact_array)),
        _policy_optimizer(config).init(eqx.filter(policy, eqx.is_inexact_array)),
        jnp.ones((), jnp.float32), jnp.zeros((), jnp.int32))


@eqx.filter_jit
def tdmpc2_update(
    state: TDMPC2State, batch: TDMPC2Batch, alpha: float | Float[Array, ""] | Float[Array, " B"], *,
    key: PRNGKeyArray,
) -> tuple[TDMPC2State, dict[str, Array]]:
    """One Adam step of the model, one of the policy (on the model step's latents, the critics
    frozen), then the EMA of the target critics and of the value scale.

    Returns:
        The new state and scalar metrics: ``consistency``, ``reward``, ``td``, ``total``, ``policy``,
        ``entropy``, ``value_scale``, ``model_grad_norm``.
    """
    config = state.model.config
    model_key, policy_key = jax.random.split(key)
    (_, metrics), grads = eqx.filter_value_and_grad(tdmpc2_world_model_loss, has_aux=True)(
        state.model, state.target_critics, state.policy, batch, alpha, key=model_key)
    updates, model_opt_state = _model_optimizer(config).update(
        grads, state.model_opt_state, eqx.filter(state.model, eqx.is_inexact_array))
    model = eqx.apply_updates(state.model, updates)
    latents = metrics.pop("latents")

    (_, policy_metrics), policy_grads = eqx.filter_value_and_grad(tdmpc2_policy_loss, has_aux=True)(
        state.policy, model, latents, alpha, state.value_scale, key=policy_key)
    updates, policy_opt_state = _policy_optimizer(config).update(
        policy_grads, state.policy_opt_state, eqx.filter(state.policy, eqx.is_inexact_array))
    policy = eqx.apply_updates(state.policy, updates)

    cvar = policy_metrics.pop("cvar").reshape(-1)
    spread = jnp.percentile(cvar, 95.0) - jnp.percentile(cvar, 5.0)
    value_scale = (1.0 - config.scale_tau) * state.value_scale + config.scale_tau * spread
    target_critics = optax.incremental_update(model.critics, state.target_critics, config.target_tau)
    metrics = {**metrics, **policy_metrics, "value_scale": value_scale, "model_grad_norm": optax.tree.norm(grads)}
    return TDMPC2State(model, policy, target_critics, model_opt_state, policy_opt_state, value_scale,
                       state.step + 1), metrics
