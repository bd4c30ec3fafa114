"""Training of a cross-sectional QR-DQN agent on the trading environment.

**Decisions.** One shared :class:`~chaosfm.agents.QuantileNetwork` decides for each of the ``K``
assets of a portfolio on its own. An asset's observation at a rebalance is its ``F`` features at
the rebalance row (:func:`~chaosfm.agents.env_observe`) and its current position level; the
``A`` actions are position levels evenly spaced in ``[-1, 1]`` (``A = 3``: short, flat, long;
``A = 5`` adds half positions). The level is in the observation because the cost of the next
trade depends on it: without it the per-asset problem is not Markov.

**Rewards.** Prices are exogenous in the environment (trades move no price), so the reward of any
action is known once the hold is over, whatever the book did: the action's level ``l'`` times the
asset's compounded return ``R`` over the hold (:attr:`StepOutput.asset_returns`), minus the cost
of moving from the previous level ``l`` to ``l'``. The cost is the environment's formula
(``cost_bps / 1e4 * |d| + impact * d**2`` for a trade ``d``, Almgren & Chriss 2000) applied to the
trade ``d = u (l' - l)`` of a unit position ``u = gross_leverage / K`` and divided by ``u``, so
the reward is per unit of capital committed (the drift of the position over the hold is ignored):

    r = reward_scale * (l' R - cost_bps / 1e4 * |l' - l| - impact * u * (l' - l)**2).

Rewards are scaled to percent so that the atoms are of order one, as the network starts, and
QR-DQN's Huber threshold ``kappa = 1`` is one percent. The next observation is the asset's
features at the next rebalance row with ``l'``; the last rebalance of an episode is terminal.

**The book.** The environment's target weights are :func:`~chaosfm.agents.soft_allocation` of
the per-asset scores ``CVaR_alpha Z(s, long) - CVaR_alpha Z(s, short)`` of the online network
(Rockafellar & Uryasev 2000; Dabney et al. 2018 for the quantile critic), with the configured
temperature, net exposure and gross leverage. Exploration (epsilon-greedy per asset) changes only
the recorded actions, never the book: as the rewards above do not depend on the book, the book can
stay greedy, and the training returns in the history are those of the greedy allocation. The
greedy action and the allocation can disagree (a risk-averse critic often prefers flat, ``CVaR``
of a risky position's lower tail being negative, while the allocation always trades every asset
it ranks): the actions are how the critic learns, the scores how it trades.

**Evaluation** is :mod:`chaosfm.agents._evaluation`'s (:func:`~chaosfm.agents.evaluate_agent`):
the greedy book on one shared rebalance calendar after the fence, beside two reference books.

Dimension letters: T rows of the panel, F features per asset, K assets per portfolio, A actions,
N quantiles, B portfolios per iteration, S rebalances per episode,
I iterations, O = F + 1 observation width.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm._progress import COMPILING, progress
from chaosfm.agents._allocation import soft_allocation
from chaosfm.agents._env import EnvConfig, EnvState, MarketPanel, eligible_starts, env_observe, env_reset, env_step
from chaosfm.agents._qrdqn import AgentState, QRDQNConfig, QuantileNetwork, qrdqn_init, qrdqn_train_step
from chaosfm.agents._quantile import cvar_from_quantiles
from chaosfm.agents._replay import ReplayState, Transition, replay_add_batch, replay_init, replay_sample
from chaosfm.evaluate import trade_cost
from chaosfm.train import batch_sharding, param_sharding

__all__ = ["AgentTrainConfig", "train_agent"]


def _default_qrdqn() -> QRDQNConfig:
    return QRDQNConfig(
        obs_dim=5, n_actions=3, n_quantiles=32, hidden=64, layers=2, gamma=0.5, learning_rate=1e-3,
        target_update_every=100, batch_size=256, buffer_size=50_000, epsilon_start=1.0, epsilon_end=0.05,
        epsilon_steps=800,
    )


@dataclass(frozen=True)
class AgentTrainConfig:
    """How the cross-sectional agent is trained and evaluated; hashable, so it can be a static argument.

    The critic's ``obs_dim`` must be the panel's ``F + 1`` (the default 5 suits :func:`market_panel`'s
    four features); its ``n_actions`` sets the position levels; its ``gamma`` defaults to 0.5: an
    action reaches the future only through the cost of the next trade (prices are exogenous), so a
    short horizon suffices and bootstraps less of the next hold's noise into the target.
    """

    env: EnvConfig = field(default_factory=EnvConfig)  # the episodes: K, holding, rebalances, costs, exposure
    qrdqn: QRDQNConfig = field(default_factory=_default_qrdqn)  # the critic, its alpha, replay and epsilon
    portfolios: int = 32  # B episodes collected per iteration (vmapped): more is more decorrelated data
    iterations: int = 200  # collect-then-update rounds
    updates_per_iteration: int = 8  # gradient steps per round; the replay ratio with B * S * K new transitions
    temperature: float = 1.0  # soft allocation temperature in score units (percent, see reward_scale)
    reward_scale: float = 100.0  # rewards in percent: atoms of order one, kappa = 1 is one percent
    momentum_feature: int = 2  # the momentum baseline's feature: market_panel's standardised 20-row log return
    momentum_temperature: float = 1.0  # its soft allocation temperature, in standard deviations of the feature
    rows_per_year: float = 252.0  # panel rows per year (trading days) to annualise per-rebalance Sharpe ratios
    confidence: float = 0.95  # two-sided level of the Sharpe interval

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}"
                    for name in ("portfolios", "iterations", "updates_per_iteration") if getattr(self, name) < 1]
        problems += [f"{name}: must be > 0, got {getattr(self, name)}"
                     for name in ("temperature", "reward_scale", "momentum_temperature", "rows_per_year")
                     if not getattr(self, name) > 0]
        if self.qrdqn.n_actions < 2:
            problems.append(f"qrdqn.n_actions: must be >= 2 position levels, got {self.qrdqn.n_actions}")
        if not 0 < self.confidence < 1:
            problems.append(f"confidence: must lie in (0, 1), got {self.confidence}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def levels(self) -> Float[Array, " A"]:
        """The position level of each action, evenly spaced in ``[-1, 1]`` (short first, long last)."""
        return jnp.linspace(-1.0, 1.0, self.qrdqn.n_actions, dtype=jnp.float32)

    @property
    def periods_per_year(self) -> float:
        """Rebalances per year: ``rows_per_year / holding``."""
        return self.rows_per_year / self.env.holding

    def replace(self, **changes: Any) -> "AgentTrainConfig":
        return dataclasses.replace(self, **changes)


def _check_width(panel: MarketPanel, obs_dim: int) -> None:
    features = panel.features.shape[-1]
    if obs_dim != features + 1:
        raise ValueError(f"qrdqn.obs_dim must be the panel's features + 1 (the position) = {features + 1}, got "
                         f"{obs_dim}")


def _check(panel: MarketPanel, config: AgentTrainConfig, obs_dim: int, first: int, last: int) -> None:
    _check_width(panel, obs_dim)
    if not bool(jnp.any(eligible_starts(panel, config.env, first=first, last=last))):
        raise ValueError(f"no episode of {config.env.episode_rows + 1} rows with {config.env.n_assets} valid assets "
                         f"fits in rows [{first}, {last}] of a panel of {panel.valid.shape[0]} rows")


def _observe(panel: MarketPanel, state: EnvState, level: Float[Array, " K"]) -> Float[Array, "K O"]:
    return jnp.concatenate([env_observe(panel, state), level[:, None]], axis=-1)


def _scores(params: QuantileNetwork, obs: Float[Array, "K O"], alpha: float) -> Float[Array, "K A"]:
    return cvar_from_quantiles(jax.vmap(params)(obs), alpha)  # (K, A)


def _book_score(cvar: Float[Array, "K A"]) -> Float[Array, " K"]:
    """What the book allocates on: ``CVaR_alpha Z(s, long) - CVaR_alpha Z(s, short)`` per asset."""
    return cvar[:, -1] - cvar[:, 0]


def _reward(config: AgentTrainConfig, new: Float[Array, " K"], old: Float[Array, " K"],
            asset_returns: Float[Array, " K"]) -> Float[Array, " K"]:
    unit = config.env.gross_leverage / config.env.n_assets
    change = new - old
    cost = trade_cost(unit * change, config.env.cost_bps, config.env.impact) / unit  # per unit of capital
    return config.reward_scale * (new * asset_returns - cost)


def _episode(params: QuantileNetwork, panel: MarketPanel, config: AgentTrainConfig, key: PRNGKeyArray,
             first: Int[Array, ""], last: Int[Array, ""], epsilon: Float[Array, ""]) -> tuple[Transition, dict]:
    """One episode of the agent: its per-asset transitions ``(S, K, ...)`` and per-rebalance outputs."""
    reset_key, explore_key = jax.random.split(key)
    levels, alpha = config.levels, config.qrdqn.alpha
    start = env_reset(panel, config.env, key=reset_key, first=first, last=last)

    def rebalance(carry, step_key):
        state, level = carry
        obs = _observe(panel, state, level)
        cvar = _scores(params, obs, alpha)  # (K, A)
        greedy = jnp.argmax(cvar, axis=-1).astype(jnp.int32)
        coin_key, pick_key = jax.random.split(step_key)
        uniform = jax.random.randint(pick_key, greedy.shape, 0, levels.shape[0], dtype=jnp.int32)
        action = jnp.where(jax.random.uniform(coin_key, greedy.shape) < epsilon, uniform, greedy)
        weights = soft_allocation(_book_score(cvar), temperature=config.temperature,
                                  net_exposure=config.env.net_exposure, gross_leverage=config.env.gross_leverage)
        state, out = env_step(panel, config.env, state, weights)
        new_level = levels[action]
        reward = _reward(config, new_level, level, out.asset_returns)
        done = jnp.broadcast_to(out.done.astype(jnp.float32), reward.shape)
        transition = Transition(obs, action, reward, _observe(panel, state, new_level), done)
        record = {"return": out.portfolio_return, "turnover": out.turnover, "costs": out.costs,
                  "non_flat": jnp.mean((levels[greedy] != 0).astype(jnp.float32))}
        return (state, new_level), (transition, record)

    steps = jax.random.split(explore_key, config.env.episode_rebalances)
    _, (transitions, record) = jax.lax.scan(rebalance, (start, jnp.zeros_like(start.weights)), steps)
    return transitions, {**record, "start": start.t}


def _iteration_body(agent: AgentState, buffer: ReplayState, panel: MarketPanel, key: PRNGKeyArray,
                    first: Int[Array, ""], last: Int[Array, ""], *, config: AgentTrainConfig, mesh: Any = None):
    """Collect ``B`` episodes, add their transitions to the buffer, take the gradient steps.

    With a ``mesh``, the portfolios (their keys, drawn as on one device) and each replay sample are
    split along their first axis over ``('data', 'fsdp')``; XLA places the rest and its collectives.
    """
    collect_key, update_key = jax.random.split(key)
    epsilon = config.qrdqn.epsilon(agent.step)
    episodes = jax.vmap(_episode, in_axes=(None, None, None, 0, None, None, None))
    portfolio_keys = _split_rows(jax.random.split(collect_key, config.portfolios), mesh)  # (B,)
    transitions, record = episodes(agent.params, panel, config, portfolio_keys, first, last, epsilon)
    flat = jax.tree_util.tree_map(lambda leaf: leaf.reshape(-1, *leaf.shape[3:]), transitions)  # (B * S * K, ...)
    buffer = replay_add_batch(buffer, flat)

    def update(agent, sample_key):
        batch = _split_rows(replay_sample(buffer, config.qrdqn.batch_size, key=sample_key), mesh)
        return qrdqn_train_step(agent, batch, config=config.qrdqn)

    agent, metrics = jax.lax.scan(update, agent, jax.random.split(update_key, config.updates_per_iteration))
    summary = {"loss": jnp.mean(metrics["loss"]), "return": jnp.mean(record["return"]), "epsilon": epsilon,
               "first_row": jnp.min(record["start"]),
               "last_row": jnp.max(record["start"]) + config.env.episode_rows}
    return agent, buffer, summary


def _split_rows(tree: Any, mesh: Any) -> Any:
    """``tree`` with its leaves' first axis split over the mesh's ``('data', 'fsdp')`` (no mesh: as it is)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


_iteration = functools.partial(jax.jit, static_argnames=("config",))(_iteration_body)


def _mesh_iteration(
    body: Callable, learner: Any, config: Any, mesh: Any, *, counts: dict[str, int], others: int
) -> tuple[Callable, Any]:
    """An agent's iteration ``body(learner, *others, config=, mesh=) -> (learner, buffer, summary)``
    compiled for ``mesh`` (QR-DQN's and TD-MPC2's), and the learner's layout.

    The learner's arrays (networks and the Adam moments, which mirror them) are laid out by
    :func:`~chaosfm.train.param_sharding`; the ``others`` arguments (buffer, panel, key, bounds, ...)
    are replicated: a replay sample draws rows from anywhere in the buffer, so a buffer split by rows
    would be gathered whole for every sample, and it is small beside what each device already holds
    (the panel).

    Raises:
        ValueError: a count of ``counts`` (portfolios, replay batch) does not split over the mesh.
    """
    problems = [f"{name}: {count} does not split over the mesh's data x fsdp = {mesh.size} devices"
                for name, count in counts.items() if count % mesh.size]
    if problems:
        raise ValueError("; ".join(problems))
    layout = param_sharding(learner, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    compiled = jax.jit(functools.partial(body, config=config, mesh=mesh),
                       in_shardings=(layout,) + (replicated,) * others, out_shardings=(layout, replicated, replicated))
    return compiled, layout


def train_agent(
    panel: MarketPanel,
    config: AgentTrainConfig,
    *,
    first: int,
    last: int,
    key: PRNGKeyArray,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    mesh: Any = None,
) -> tuple[AgentState, dict[str, np.ndarray]]:
    """Train a fresh QR-DQN critic on episodes inside rows ``[first, last]``.

    Each iteration collects ``config.portfolios`` episodes (vmapped; epsilon-greedy per asset on the
    critic's CVaR, the book allocated greedily), writes their ``B * S * K`` per-asset transitions to
    the replay buffer and takes ``updates_per_iteration`` QR-DQN steps; the whole iteration is one
    compiled function. Episodes touch only rows in ``[first, last]`` (:func:`env_reset`).

    Args:
        panel: the market panel (see :func:`market_panel`).
        config: the training configuration.
        first: the first row an episode may touch.
        last: the last row an episode may touch: the training fence's row.
        key: the randomness of the initialisation, the episodes, exploration and replay.
        on_iteration: called after each iteration with its index and its entry of the history
            (e.g. a job's log); a progress bar is shown to a person watching either way.
        mesh: a ``('data', 'fsdp')`` mesh (:func:`~chaosfm.train.training_mesh`) to train on, or
            None for one device. The agent's arrays are laid out by
            :func:`~chaosfm.train.param_sharding`, the portfolios and each replay sample split over
            both axes; every key is the one-device key, so the result does not depend on the layout
            (up to the order of float32 reductions).

    Returns:
        The trained agent (its arrays where the mesh put them) and the history, ``(I,)`` arrays per iteration: ``loss`` (mean over its
        gradient steps), ``return`` (the greedy book's mean net return per rebalance on the
        iteration's training episodes), ``epsilon``, ``first_row`` and ``last_row`` (the earliest
        and latest rows its episodes touched).

    Raises:
        ValueError: the critic's ``obs_dim`` is not the panel's features + 1, no episode fits, or
            ``portfolios`` or ``qrdqn.batch_size`` does not split over the mesh's devices.
    """
    _check(panel, config, config.qrdqn.obs_dim, first, last)
    init_key, loop_key = jax.random.split(key)
    agent = qrdqn_init(config.qrdqn, key=init_key)
    width = config.qrdqn.obs_dim
    example = Transition(jnp.zeros((width,), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32),
                         jnp.zeros((width,), jnp.float32), jnp.zeros((), jnp.float32))
    buffer = replay_init(config.qrdqn.buffer_size, example)
    bounds = jnp.asarray(first, jnp.int32), jnp.asarray(last, jnp.int32)
    keys = jax.random.split(loop_key, config.iterations)
    if mesh is None:
        iteration = functools.partial(_iteration, config=config)
    else:
        iteration, layout = _mesh_iteration(
            _iteration_body, agent, config, mesh, others=5,
            counts={"portfolios": config.portfolios, "qrdqn.batch_size": config.qrdqn.batch_size})
        replicated = NamedSharding(mesh, PartitionSpec())
        agent = jax.device_put(agent, layout)
        buffer, panel, bounds, keys = jax.device_put((buffer, panel, bounds, keys), replicated)
    summaries = []
    for index, iteration_key in enumerate(progress(keys, "training the agent", total=config.iterations, first=COMPILING)):
        agent, buffer, summary = iteration(agent, buffer, panel, iteration_key, *bounds)
        summaries.append(summary)
        if on_iteration is not None:
            on_iteration(index, {name: float(value) for name, value in summary.items()})
    history = {name: np.stack([np.asarray(s[name]) for s in summaries]) for name in summaries[0]}
    return agent, history
