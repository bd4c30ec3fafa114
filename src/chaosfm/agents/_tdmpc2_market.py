"""TD-MPC2 as a cross-sectional trading agent: one world model, critic ensemble and policy shared
by every asset, trained on the market environment and scored on the QR-DQN agent's calendar.

**Per asset, as the QR-DQN agent.** An asset's observation at a rebalance is its ``F`` panel
features (:func:`~chaosfm.agents.env_observe`) and its current position level, the width
``O = F + 1`` of the QR-DQN agent's (the level makes the per-asset problem Markov: the next
trade's cost depends on it). Its action is one continuous level ``a`` in ``[-1, 1]``
(``action_dim = 1``); the encoder, dynamics, reward head, critics and policy of
:class:`~chaosfm.agents.TDMPC2WorldModel` / :class:`~chaosfm.agents.TDMPC2Policy` process one asset
and are vmapped over the ``K`` assets of a portfolio and the ``B`` portfolios of an iteration.

**Rewards** are the QR-DQN trainer's per-asset rewards (:mod:`chaosfm.agents._trainer`, the same
function): prices are exogenous, so the level ``a`` earns ``a R`` over the hold minus the cost of
moving from the previous level, per unit of capital and in percent. Each asset's episode is one
trajectory of ``S`` decisions; every window of ``H`` decisions enters the replay buffer as a
sub-trajectory (:func:`~chaosfm.agents.episode_windows`).

**The levels.** Each asset's level at a rebalance is chosen by the configured ``actor``, one of
:data:`ACTORS`: ``"mppi"`` (the default) plans it by :func:`~chaosfm.agents.tdmpc2_plan`, MPPI in
the latent space from ``h(o)`` with the latent dynamics, the reward head and the critics'
``CVaR_alpha`` as terminal value, ``plan_policy_samples`` rollouts of the policy prior among the
candidates, on the budget ``plan_iterations`` x ``plan_samples`` (``plan_elites`` refitted) over
``plan_horizon`` decisions; ``"policy"`` takes the prior's deterministic level ``tanh(mu(h(o),
alpha))`` (the comparison, and the cheaper actor). The plans of the ``K`` assets and ``B``
portfolios are one vmapped call; a plan starts from the centre of ``[-1, 1]`` and the prior's
rollouts (no warm start: an asset's next decision may be in another portfolio's episode).

**The book.** The environment's target weights are :func:`~chaosfm.agents.soft_allocation` of the
levels (one score per asset), with the configured temperature, net exposure and gross leverage:
exploration (Gaussian noise on the level, uniform levels in the first ``seed_iterations``)
changes only the recorded actions, never the book, as for QR-DQN.

**Dynamic CVaR.** With a ``(T, A)`` Multiverse Crossing convergence (an encoder run's) the CVaR
level of each asset's sub-trajectory is :func:`~chaosfm.agents.cvar_alpha` of the convergence at
its first decision, and an asset below ``no_trade`` (or of unknown convergence, NaN) is not traded:
its level is 0 and the allocation is made over the others (the gate of
:func:`~chaosfm.agents.evaluate_gate`). Without it, or with ``fixed_alpha``, the level is the fixed
``alpha`` and every asset trades. The level of the moment is also what the agent acts at: the
policy prior's input (the model's ``alpha_input``, on by default here), the CVaR of the planner's
terminal value and the level of the policy's rollouts among the candidates.

**Evaluation** (:func:`~chaosfm.agents.evaluate_tdmpc2_market`, in
:mod:`chaosfm.agents._tdmpc2_market_eval`) is :func:`~chaosfm.agents.evaluate_agent`'s
calendar, portfolios and reference books, the agent's book replaced by this one; it also returns
the agent's telemetry: one record per decision (rebalance, portfolio, asset) with the CVaR level,
the planned and the prior's level, the target weight and the realised reward.

Dimension letters: T rows of the panel, A assets of the panel, F features per asset, O = F + 1,
K assets per portfolio, B portfolios per iteration, S rebalances per episode, H sub-trajectory
length, W = S - H + 1 windows per asset and episode, P portfolios of a calendar.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from chaosfm._progress import COMPILING, progress
from chaosfm.agents._env import EnvConfig, EnvState, MarketPanel, env_reset, env_step
from chaosfm.agents._evaluation import _gated_allocation
from chaosfm.agents._mppi import MPPIConfig
from chaosfm.agents._replay import ReplayState, replay_add_batch, replay_init, replay_sample
from chaosfm.agents._tdmpc2 import (
    TDMPC2Batch,
    TDMPC2Config,
    TDMPC2Policy,
    TDMPC2State,
    TDMPC2WorldModel,
    cvar_alpha,
    tdmpc2_init,
    tdmpc2_update,
)
from chaosfm.agents._tdmpc2_plan import tdmpc2_plan
from chaosfm.agents._tdmpc2_trainer import episode_windows
from chaosfm.agents._trainer import AgentTrainConfig, _check, _mesh_iteration, _observe, _reward, _split_rows

__all__ = [
    "ACTORS",
    "MarketTDMPC2Agent",
    "MarketTDMPC2Config",
    "market_tdmpc2_agent",
    "train_tdmpc2_market",
]


def _default_model() -> TDMPC2Config:
    return TDMPC2Config(obs_dim=5, action_dim=1, latent_dim=32, hidden=64, discount=0.5, alpha_input=True)


@dataclass(frozen=True)
class MarketTDMPC2Config:
    """How the market TD-MPC2 agent is trained; hashable, so it can be a static argument.

    The model's ``obs_dim`` must be the panel's ``F + 1`` and its ``action_dim`` 1; its default
    ``discount`` is 0.5 for the QR-DQN agent's reason (a level reaches the future only through the
    next trade's cost). ``book`` holds the episodes, the allocation, the reward scale and the
    reference books, shared with the QR-DQN agent (its ``qrdqn`` is not used).
    """

    book: AgentTrainConfig = field(default_factory=AgentTrainConfig)  # env, temperature, rewards, references
    model: TDMPC2Config = field(default_factory=_default_model)  # world model, critics, policy, the alpha map
    iterations: int = 100  # collect-then-update rounds
    seed_iterations: int = 2  # first rounds record uniform levels, so the model sees every level early
    updates_per_iteration: int = 8  # tdmpc2_update steps per round
    batch_size: int = 256  # sub-trajectories per update
    buffer_size: int = 50_000  # replay capacity in sub-trajectories; the oldest are overwritten
    exploration_std: float = 0.3  # Gaussian noise on the recorded level, in [-1, 1] units
    alpha: float = 0.5  # the CVaR level without a convergence score (or with fixed_alpha)
    fixed_alpha: bool = False  # ignore the convergence: fixed alpha, every asset traded (the comparison)
    actor: str = "mppi"  # how a level is chosen (a key of ACTORS): "mppi" plans; "policy" takes the prior's mode
    plan_horizon: int = 2  # decisions the planner looks ahead; the critics' CVaR stands in for the rest
    plan_iterations: int = 2  # MPPI refits per decision: one plan per asset, rebalance and portfolio adds up
    plan_samples: int = 32  # sequences scored per refit, the prior's rollouts included
    plan_elites: int = 4  # best sequences the sampling distribution is refitted to
    plan_policy_samples: int = 4  # of plan_samples, rollouts of the policy prior (at the asset's alpha)
    plan_temperature: float = 0.5  # in reward units (percent per hold): elites within ~this share the weight

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                    ("iterations", "updates_per_iteration", "batch_size", "buffer_size") if getattr(self, name) < 1]
        if not 0 <= self.seed_iterations <= self.iterations:
            problems.append(f"seed_iterations: must lie in [0, iterations = {self.iterations}], got "
                            f"{self.seed_iterations}")
        if not self.exploration_std >= 0:
            problems.append(f"exploration_std: must be >= 0, got {self.exploration_std}")
        if not 0 < self.alpha <= 1:
            problems.append(f"alpha: must lie in (0, 1], got {self.alpha}")
        if self.model.action_dim != 1:
            problems.append(f"action_dim: must be 1 (one level per asset), got {self.model.action_dim}")
        if self.book.env.episode_rebalances < self.model.horizon:
            problems.append(f"horizon: must be <= env.episode_rebalances ({self.book.env.episode_rebalances}), "
                            f"got {self.model.horizon}")
        if self.actor not in ACTORS:
            problems.append(f"actor: must be one of {sorted(ACTORS)}, got {self.actor!r}")
        try:
            self.planner
        except ValueError as error:
            problems.append(f"the planner (plan_horizon, plan_iterations, plan_samples, plan_elites, "
                            f"plan_policy_samples, plan_temperature): {error}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_fields(cls, book: AgentTrainConfig, obs_dim: int, fields: dict[str, Any]) -> "MarketTDMPC2Config":
        """A config from one flat mapping of this class's scalar fields and :class:`TDMPC2Config`'s,
        the model's ``obs_dim`` set to ``obs_dim``.

        Raises:
            ValueError: a key is neither's (named, with the allowed keys) or a value breaks a rule.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"book", "model"}
        model_keys = {f.name for f in dataclasses.fields(TDMPC2Config)} - {"obs_dim", "action_dim"}
        unknown = sorted(set(fields) - own - model_keys)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(own | model_keys)}")
        model = _default_model().replace(obs_dim=obs_dim, **{k: v for k, v in fields.items() if k in model_keys})
        return cls(book=book, model=model, **{k: v for k, v in fields.items() if k in own})

    @property
    def env(self) -> EnvConfig:
        """The episodes' shape and costs (the book's)."""
        return self.book.env

    @property
    def planner(self) -> MPPIConfig:
        """The planner's budget and rule (its discount the critics': the planner must use theirs)."""
        return MPPIConfig(action_dim=1, horizon=self.plan_horizon, num_samples=self.plan_samples,
                          num_elites=self.plan_elites, iterations=self.plan_iterations,
                          temperature=self.plan_temperature, discount=self.model.discount,
                          num_policy_samples=self.plan_policy_samples)

    def replace(self, **changes: Any) -> "MarketTDMPC2Config":
        return dataclasses.replace(self, **changes)


class MarketTDMPC2Agent(eqx.Module):
    """What a trained market agent keeps: the world model and the policy (saved as equinox leaves)."""

    model: TDMPC2WorldModel
    policy: TDMPC2Policy

    @property
    def config(self) -> TDMPC2Config:
        return self.model.config

    def scores(self, obs: Float[Array, "K O"], alpha: Float[Array, " K"]) -> Float[Array, " K"]:
        """The policy prior's deterministic level ``tanh(mu(h(o), alpha))`` of each asset."""
        return jax.vmap(lambda o, a: self.policy.mode(self.model.encode(o), a)[0])(obs, alpha)

    def plan(self, obs: Float[Array, "K O"], alpha: Float[Array, " K"], planner: MPPIConfig,
             keys: PRNGKeyArray) -> Float[Array, " K"]:
        """Each asset's level by :func:`~chaosfm.agents.tdmpc2_plan` at its CVaR level, one key per asset."""
        return jax.vmap(lambda o, a, k: tdmpc2_plan(self.model, self.policy, o, alpha=a, config=planner,
                                                    key=k).action[0])(obs, alpha, keys)


def _prior_levels(agent: MarketTDMPC2Agent, obs, alpha, config: "MarketTDMPC2Config", keys) -> Float[Array, " K"]:
    del config, keys  # the prior's mode draws nothing
    return agent.scores(obs, alpha)


def _planned_levels(agent: MarketTDMPC2Agent, obs, alpha, config: "MarketTDMPC2Config", keys) -> Float[Array, " K"]:
    return agent.plan(obs, alpha, config.planner, keys)


ACTORS: dict[str, Callable[..., Array]] = {"mppi": _planned_levels, "policy": _prior_levels}
"""``actor`` -> ``(agent, obs (K, O), alpha (K,), config, keys (K,)) -> levels (K,)`` in ``[-1, 1]``."""


def market_tdmpc2_agent(config: TDMPC2Config, *, key: PRNGKeyArray) -> MarketTDMPC2Agent:
    """A freshly initialised agent (the template saved leaves are read into)."""
    state = tdmpc2_init(config, key=key)
    return MarketTDMPC2Agent(state.model, state.policy)


def _risk(config: MarketTDMPC2Config, convergence: Float[Array, "T A"] | None, state: EnvState
          ) -> tuple[Float[Array, " K"], Bool[Array, " K"]]:
    """Each asset's CVaR level and trade flag at the state's row (module docstring)."""
    size = state.assets.shape
    if convergence is None or config.fixed_alpha:
        return jnp.full(size, config.alpha, jnp.float32), jnp.ones(size, bool)
    score = convergence[state.t, state.assets]  # (K,)
    known = jnp.isfinite(score)
    alpha, trade = cvar_alpha(config.model, jnp.where(known, score, 0.0))
    return jnp.where(known, alpha, config.model.alpha_min), trade & known


def _episode(agent: MarketTDMPC2Agent, panel: MarketPanel, convergence: Float[Array, "T A"] | None,
             config: MarketTDMPC2Config, key: PRNGKeyArray, first: Int[Array, ""], last: Int[Array, ""],
             seeding: Bool[Array, ""]) -> tuple[TDMPC2Batch, Float[Array, " KW"], dict[str, Array]]:
    """One episode: its ``K W`` per-asset sub-trajectories, their CVaR levels and its records."""
    reset_key, explore_key = jax.random.split(key)
    book, horizon = config.book, config.model.horizon
    start = env_reset(panel, book.env, key=reset_key, first=first, last=last)

    def rebalance(carry, step_key):
        state, level = carry
        obs = _observe(panel, state, level)  # (K, O)
        alpha, trade = _risk(config, convergence, state)
        noise_key, uniform_key = jax.random.split(step_key)
        act_key = jax.random.fold_in(step_key, 2)  # apart from split(step_key)'s two: exploration draws as before
        scores = ACTORS[config.actor](agent, obs, alpha, config, jax.random.split(act_key, obs.shape[0]))
        explored = jnp.clip(scores + config.exploration_std * jax.random.normal(noise_key, scores.shape), -1.0, 1.0)
        uniform = jax.random.uniform(uniform_key, scores.shape, minval=-1.0, maxval=1.0)
        action = jnp.where(trade, jnp.where(seeding, uniform, explored), 0.0)
        weights = _gated_allocation(scores, trade, book)
        state, out = env_step(panel, book.env, state, weights)
        reward = _reward(book, action, level, out.asset_returns)
        record = {"return": out.portfolio_return, "turnover": out.turnover, "traded": jnp.mean(trade)}
        return (state, action), (obs, action, reward, alpha, record)

    steps = jax.random.split(explore_key, book.env.episode_rebalances)
    (end, level), (obs, action, reward, alpha, record) = jax.lax.scan(
        rebalance, (start, jnp.zeros_like(start.weights)), steps)
    obs = jnp.concatenate([obs, _observe(panel, end, level)[None]], axis=0)  # (S + 1, K, O)
    per_asset = TDMPC2Batch(jnp.swapaxes(obs, 0, 1), jnp.swapaxes(action, 0, 1)[..., None],
                            jnp.swapaxes(reward, 0, 1))  # (K, S + 1, O), (K, S, 1), (K, S)
    windows = episode_windows(per_asset, horizon, 1.0)  # rewards already scaled by _reward
    alphas = jnp.swapaxes(alpha, 0, 1)[:, :alpha.shape[0] - horizon + 1].reshape(-1)  # (K W,) at each window's z_0
    return windows, alphas, {**record, "start": start.t}


def _iteration_body(state: TDMPC2State, buffer: ReplayState, panel: MarketPanel, convergence: Array | None,
                    key: PRNGKeyArray, first: Int[Array, ""], last: Int[Array, ""], seeding: Bool[Array, ""],
                    config: MarketTDMPC2Config, mesh: Any = None):
    """Collect ``B`` episodes, add their sub-trajectories to the buffer, take the updates.

    With a ``mesh``, the portfolios (their keys, drawn as on one device) and each replay sample are
    split along their first axis over ``('data', 'fsdp')``; XLA places the rest and its collectives.
    """
    collect_key, update_key = jax.random.split(key)
    agent = MarketTDMPC2Agent(state.model, state.policy)
    episodes = jax.vmap(_episode, in_axes=(None, None, None, None, 0, None, None, None))
    portfolio_keys = _split_rows(jax.random.split(collect_key, config.book.portfolios), mesh)  # (B,)
    windows, alphas, record = episodes(agent, panel, convergence, config, portfolio_keys, first, last, seeding)
    flat = jax.tree_util.tree_map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), (windows, alphas))  # (B K W, ...)
    buffer = replay_add_batch(buffer, flat)

    def update(state, update_key):
        sample_key, step_key = jax.random.split(update_key)
        batch, alpha = _split_rows(replay_sample(buffer, config.batch_size, key=sample_key), mesh)
        return tdmpc2_update(state, batch, alpha, key=step_key)

    state, metrics = jax.lax.scan(update, state, jax.random.split(update_key, config.updates_per_iteration))
    summary = {"loss": jnp.mean(metrics["total"]), "td": jnp.mean(metrics["td"]),
               "policy": jnp.mean(metrics["policy"]), "return": jnp.mean(record["return"]),
               "alpha": jnp.mean(alphas), "traded": jnp.mean(record["traded"]),
               "first_row": jnp.min(record["start"]), "last_row": jnp.max(record["start"]) + config.env.episode_rows}
    return state, buffer, summary


_iteration = eqx.filter_jit(_iteration_body)


def _convergence(panel: MarketPanel, convergence: Float[np.ndarray, "T A"] | None) -> Array | None:
    if convergence is None:
        return None
    convergence = np.asarray(convergence, np.float32)
    if convergence.shape != tuple(panel.valid.shape):
        raise ValueError(f"convergence must have the panel's shape (T, A) = {tuple(panel.valid.shape)}, got "
                         f"{convergence.shape}")
    return jnp.asarray(convergence)


def train_tdmpc2_market(
    panel: MarketPanel,
    config: MarketTDMPC2Config,
    *,
    first: int,
    last: int,
    key: PRNGKeyArray,
    convergence: Float[np.ndarray, "T A"] | None = None,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    mesh: Any = None,
) -> tuple[TDMPC2State, dict[str, np.ndarray]]:
    """Train a fresh TD-MPC2 agent on episodes inside rows ``[first, last]`` (module docstring).

    Each iteration collects ``config.book.portfolios`` episodes (vmapped), writes their ``B K W``
    per-asset sub-trajectories (with the CVaR level of each) to the replay buffer and takes
    ``updates_per_iteration`` :func:`~chaosfm.agents.tdmpc2_update` steps, in one compiled call.
    Episodes touch only rows in ``[first, last]`` (:func:`~chaosfm.agents.env_reset`).

    Args:
        panel: the market panel.
        config: the training configuration.
        first: the first row an episode may touch.
        last: the last row an episode may touch: the training fence's row.
        key: the randomness of the initialisation, the episodes, exploration and replay.
        convergence: ``(T, A)`` causal Multiverse Crossing convergence (NaN where unknown) for the
            dynamic CVaR, or None for the fixed ``alpha``.
        on_iteration: called after each iteration with its index and its entry of the history.
        mesh: a ``('data', 'fsdp')`` mesh (:func:`~chaosfm.train.training_mesh`) to train on, or
            None for one device. The learner's arrays (world model, policy, target critics, both
            Adam states) are laid out by :func:`~chaosfm.train.param_sharding`, the portfolios and
            each replay sample split over both axes; every key is the one-device key, so the result
            does not depend on the layout (up to the order of float32 reductions).

    Returns:
        The learner (its arrays where the mesh put them) and the history, ``(I,)`` arrays: ``loss``
        (the model's total), ``td``,
        ``policy``, ``return`` (the book's mean net return per rebalance), ``alpha`` (the mean CVaR
        level of the new sub-trajectories), ``traded`` (the share of asset-rebalances traded),
        ``first_row`` and ``last_row`` (the earliest and latest rows the episodes touched).

    Raises:
        ValueError: the model's ``obs_dim`` is not the panel's features + 1, no episode fits,
            ``convergence`` is not ``(T, A)``, or ``book.portfolios`` or ``batch_size`` does not
            split over the mesh's devices.
    """
    _check(panel, config.book, config.model.obs_dim, first, last)
    convergence = _convergence(panel, convergence)
    init_key, loop_key = jax.random.split(key)
    state = tdmpc2_init(config.model, key=init_key)
    m = config.model
    example = (TDMPC2Batch(jnp.zeros((m.horizon + 1, m.obs_dim)), jnp.zeros((m.horizon, 1)), jnp.zeros((m.horizon,))),
               jnp.zeros((), jnp.float32))
    buffer = replay_init(config.buffer_size, example)
    bounds = jnp.asarray(first, jnp.int32), jnp.asarray(last, jnp.int32)
    summaries = []
    keys = jax.random.split(loop_key, config.iterations)
    if mesh is None:
        iteration = functools.partial(_iteration, config=config)
    else:
        # The buffer, panel, convergence, key, bounds and seeding flag are replicated.
        iteration, layout = _mesh_iteration(
            _iteration_body, state, config, mesh, others=7,
            counts={"portfolios": config.book.portfolios, "batch_size": config.batch_size})
        replicated = NamedSharding(mesh, PartitionSpec())
        state = jax.device_put(state, layout)
        buffer, panel, convergence, bounds, keys = jax.device_put(
            (buffer, panel, convergence, bounds, keys), replicated)
    for index, iteration_key in enumerate(progress(keys, "training TD-MPC2", total=config.iterations, first=COMPILING)):
        seeding = jnp.asarray(index < config.seed_iterations)
        if mesh is not None:
            seeding = jax.device_put(seeding, replicated)
        state, buffer, summary = iteration(state, buffer, panel, convergence, iteration_key, *bounds, seeding)
        summaries.append(summary)
        if on_iteration is not None:
            on_iteration(index, {name: float(value) for name, value in summary.items()})
    history = {name: np.stack([np.asarray(s[name]) for s in summaries]) for name in summaries[0]}
    return state, history
