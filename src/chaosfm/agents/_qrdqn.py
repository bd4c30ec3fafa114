"""QR-DQN with a CVaR critic: a distributional Q-network acting on the lower tail of its returns.

The network maps one observation to ``N`` quantile atoms of the return of each of ``A`` actions
(Dabney et al. 2018, AAAI, "Distributional Reinforcement Learning with Quantile Regression",
section 3). It is trained by quantile regression (:func:`~chaosfm.agents.quantile_huber_loss`, their
eq. 10) towards the distributional Bellman target

    T Z(s, a) = r + gamma * (1 - done) * Z_target(s', a*),   a* = argmax_a' CVaR_alpha Z_target(s', a')

(their algorithm 1, with the mean of the atoms replaced by their CVaR). As in Dabney et al., the
*target* network both selects ``a*`` and evaluates it (DQN, not double DQN). The agent acts
epsilon-greedily on ``CVaR_alpha`` of the online network (Rockafellar & Uryasev 2000 for the CVaR,
computed by :func:`~chaosfm.agents.cvar_from_quantiles`); ``alpha = 1`` is the risk-neutral QR-DQN.

Greedy-in-CVaR at every step is exact for one-step problems (``gamma = 0``, bandits). Over several
steps it is a heuristic: the CVaR of the whole return is not optimised by a Markov policy that is
greedy in the per-step CVaR (it is not time-consistent; Lim & Malik 2022).

The state is a NamedTuple (:class:`AgentState`) and every function is pure, so training jits, scans
and vmaps over seeds. Nothing here knows about an environment: it sees observations, action
indices, rewards and done flags (:class:`~chaosfm.agents.Transition`).

Dimension letters: O observation width, A actions, N quantiles, H hidden width, B batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm.agents._quantile import cvar_from_quantiles, quantile_huber_loss, quantile_midpoints
from chaosfm.agents._replay import Transition

__all__ = [
    "AgentState",
    "QRDQNConfig",
    "QuantileNetwork",
    "qrdqn_act",
    "qrdqn_init",
    "qrdqn_loss",
    "qrdqn_train_step",
]


@dataclass(frozen=True)
class QRDQNConfig:
    """Shapes and hyperparameters of a QR-DQN agent; saved beside the weights."""

    obs_dim: int  # O, the observation width the environment hands over
    n_actions: int  # A, discrete actions scored by the critic
    n_quantiles: int = 32  # N atoms per action; Dabney et al. use 200 on Atari, 32 suffices for tails at 1/32
    hidden: int = 64  # H, width of the MLP's hidden layers
    layers: int = 2  # hidden layers of the MLP
    gamma: float = 0.99  # discount of the Bellman target; 0 makes every step a bandit
    learning_rate: float = 3e-4  # Adam step size
    target_update_every: int = 100  # hard copy of the online network into the target every this many steps
    target_tau: float | None = None  # Polyak rate instead of hard copies (target += tau (online - target))
    alpha: float = 0.25  # CVaR level of acting and of the target's greedy action; 1 is risk-neutral
    kappa: float = 1.0  # Huber threshold of the quantile loss, in reward units; 0 is pure quantile regression
    batch_size: int = 64  # transitions per gradient step
    buffer_size: int = 10_000  # replay capacity; older transitions are overwritten
    epsilon_start: float = 1.0  # exploration rate at step 0: act at random until the critic means something
    epsilon_end: float = 0.05  # exploration rate after the decay, kept to revisit actions
    epsilon_steps: int = 10_000  # steps of the linear decay from start to end

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                    ("obs_dim", "n_actions", "n_quantiles", "hidden", "layers", "target_update_every",
                     "batch_size", "buffer_size", "epsilon_steps") if getattr(self, name) < 1]
        if not 0 <= self.gamma <= 1:
            problems.append(f"gamma: must lie in [0, 1], got {self.gamma}")
        if not 0 < self.alpha <= 1:
            problems.append(f"alpha: must lie in (0, 1], got {self.alpha}")
        if self.kappa < 0:
            problems.append(f"kappa: must be >= 0, got {self.kappa}")
        if self.target_tau is not None and not 0 < self.target_tau <= 1:
            problems.append(f"target_tau: must lie in (0, 1] or be None, got {self.target_tau}")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}: must lie in [0, 1], got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> "QRDQNConfig":
        return dataclasses.replace(self, **changes)

    def epsilon(self, step: int | Int[Array, ""]) -> Float[Array, ""]:
        """The exploration rate at ``step``: linear from ``epsilon_start`` to ``epsilon_end``."""
        return optax.linear_schedule(self.epsilon_start, self.epsilon_end, self.epsilon_steps)(step)


class QuantileNetwork(eqx.Module):
    """An MLP from one observation ``(O,)`` to quantile atoms ``(A, N)``; batch with ``jax.vmap``.

    Every leaf is an array (the config is static), so the module passes through ``jax.jit`` as it is.
    """

    config: QRDQNConfig = eqx.field(static=True)
    hidden_layers: tuple[eqx.nn.Linear, ...]
    head: eqx.nn.Linear

    def __init__(self, config: QRDQNConfig, *, key: PRNGKeyArray):
        self.config = config
        keys = jax.random.split(key, config.layers + 1)
        sizes = [config.obs_dim] + [config.hidden] * config.layers
        self.hidden_layers = tuple(
            eqx.nn.Linear(fan_in, fan_out, key=k) for fan_in, fan_out, k in zip(sizes[:-1], sizes[1:], keys[:-1])
        )
        self.head = eqx.nn.Linear(config.hidden, config.n_actions * config.n_quantiles, key=keys[-1])

    def __call__(self, obs: Float[Array, " O"]) -> Float[Array, "A N"]:
        h = jnp.asarray(obs, jnp.float32)
        for layer in self.hidden_layers:
            h = jax.nn.relu(layer(h))
        return self.head(h).reshape(self.config.n_actions, self.config.n_quantiles)  # (A, N)


class AgentState(NamedTuple):
    """Everything a QR-DQN learner carries between steps.

    Attributes:
        params: the online :class:`QuantileNetwork`.
        target_params: the target network (a lagged copy of ``params``).
        opt_state: Adam's state over the online network's arrays.
        step: gradient steps taken (int32).
    """

    params: QuantileNetwork
    target_params: QuantileNetwork
    opt_state: Any
    step: Int[Array, ""]


def _optimizer(config: QRDQNConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def qrdqn_init(config: QRDQNConfig, *, key: PRNGKeyArray) -> AgentState:
    """A fresh agent: online and target networks equal, Adam at rest, step 0."""
    params = QuantileNetwork(config, key=key)
    opt_state = _optimizer(config).init(eqx.filter(params, eqx.is_inexact_array))
    return AgentState(params, params, opt_state, jnp.zeros((), jnp.int32))


@eqx.filter_jit
def qrdqn_act(
    params: QuantileNetwork,
    obs: Float[Array, " O"],
    *,
    alpha: float | Float[Array, ""],
    epsilon: float | Float[Array, ""],
    key: PRNGKeyArray,
) -> Int[Array, ""]:
    """An epsilon-greedy action: ``argmax_a CVaR_alpha Z(obs, a)``, or a uniform one with probability
    ``epsilon``. One observation; vmap over a batch (with one key each)."""
    explore_key, random_key = jax.random.split(key)
    greedy = jnp.argmax(cvar_from_quantiles(params(obs), alpha)).astype(jnp.int32)
    uniform = jax.random.randint(random_key, (), 0, params.config.n_actions, dtype=jnp.int32)
    return jnp.where(jax.random.uniform(explore_key) < epsilon, uniform, greedy)


def qrdqn_loss(
    params: QuantileNetwork, target_params: QuantileNetwork, batch: Transition, *, config: QRDQNConfig
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The mean over a batch ``(B, ...)`` of the quantile Huber loss of ``Z(s, a)`` against the
    CVaR-greedy distributional Bellman target of the target network (see the module docstring).

    Returns:
        The loss and metrics: ``loss``, ``q_mean`` (mean atom of the taken actions), ``target_mean``.
    """
    taus = quantile_midpoints(config.n_quantiles)

    def one(transition: Transition) -> tuple[Array, Array, Array]:
        atoms = params(transition.obs)[transition.action]  # (N,)
        next_atoms = target_params(transition.next_obs)  # (A, N)
        best = jnp.argmax(cvar_from_quantiles(next_atoms, config.alpha))
        bootstrap = config.gamma * (1.0 - transition.done)
        target = jax.lax.stop_gradient(transition.reward + bootstrap * next_atoms[best])  # (N,)
        return quantile_huber_loss(atoms, target, taus, config.kappa), jnp.mean(atoms), jnp.mean(target)

    losses, q_means, target_means = jax.vmap(one)(batch)  # (B,) each
    loss = jnp.mean(losses)
    return loss, {"loss": loss, "q_mean": jnp.mean(q_means), "target_mean": jnp.mean(target_means)}


@eqx.filter_jit
def qrdqn_train_step(
    state: AgentState, batch: Transition, *, config: QRDQNConfig
) -> tuple[AgentState, dict[str, Array]]:
    """One Adam step on :func:`qrdqn_loss` for a batch ``(B, ...)``, then the target update: a hard
    copy every ``target_update_every`` steps, or Polyak averaging with ``target_tau``.

    Returns:
        The new state and the loss metrics (plus ``grad_norm``).
    """
    (_, metrics), grads = eqx.filter_value_and_grad(qrdqn_loss, has_aux=True)(
        state.params, state.target_params, batch, config=config
    )
    updates, opt_state = _optimizer(config).update(
        grads, state.opt_state, eqx.filter(state.params, eqx.is_inexact_array)
    )
    params = eqx.apply_updates(state.params, updates)
    step = state.step + 1
    if config.target_tau is not None:
        target_params = optax.incremental_update(params, state.target_params, config.target_tau)
    else:
        copy = step % config.target_update_every == 0
        target_params = jax.tree_util.tree_map(lambda new, old: jnp.where(copy, new, old), params, state.target_params)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    return AgentState(params, target_params, opt_state, step), metrics
