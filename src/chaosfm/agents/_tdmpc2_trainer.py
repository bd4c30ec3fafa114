"""Training TD-MPC2 on the Lorenz-63 control task: collect episodes with the planner, learn from replay.

Each round collects ``episodes_per_round`` episodes at once (``jax.vmap``), each a ``lax.scan`` of
decisions: the first ``seed_rounds`` rounds act uniformly at random (TD-MPC2's seed steps), later
rounds act by :func:`tdmpc2_plan` (warm-started MPPI in the latent space, policy-prior rollouts
among the candidates) plus Gaussian exploration noise. Every window of ``horizon + 1``
observations of an episode enters the replay buffer (:func:`replay_add_batch`: one slot holds one
sub-trajectory, so sampling a slot samples a sub-trajectory), then ``updates_per_round`` updates
(:func:`tdmpc2_update`) run in one ``lax.scan``. TD-MPC2 interleaves one update per step; updating
per round keeps every round two jitted calls.

The agent observes ``(position - C+) / obs_scale`` and acts in ``[-1, 1]^3``, scaled by ``u_max``
to the forcing; it learns from the task's reward times ``reward_scale``. The CVaR level is one
fixed ``alpha`` (the task has no Multiverse Crossing score).

Dimension letters: E episodes per round, T decisions per episode, H sub-trajectory length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm.agents._control import (
    LorenzControlConfig,
    lorenz_control_reset,
    lorenz_control_step,
    lorenz_fixed_point,
)
from chaosfm.agents._mppi import MPPIConfig
from chaosfm.agents._replay import ReplayState, replay_add_batch, replay_init, replay_sample
from chaosfm.agents._tdmpc2 import TDMPC2Batch, TDMPC2Config, TDMPC2State, tdmpc2_init, tdmpc2_update
from chaosfm.agents._tdmpc2_plan import tdmpc2_plan

__all__ = [
    "LorenzEpisodes",
    "TDMPC2TrainConfig",
    "episode_windows",
    "lorenz_observation",
    "run_tdmpc2_episodes",
    "train_tdmpc2_lorenz",
]


@dataclass(frozen=True)
class TDMPC2TrainConfig:
    """The data collection and update schedule of :func:`train_tdmpc2_lorenz`."""

    rounds: int = 10  # collection rounds, seed rounds included
    seed_rounds: int = 2  # first rounds act uniformly at random, so the model sees varied forcing first
    episodes_per_round: int = 4  # E episodes collected at once per round
    episode_steps: int = 100  # T decisions of a training episode (the bench scores the task's full episodes)
    updates_per_round: int = 300  # gradient updates after each round
    batch_size: int = 128  # sub-trajectories per update
    buffer_size: int = 20_000  # replay capacity in sub-trajectories; the oldest are overwritten
    exploration_std: float = 0.3  # Gaussian noise added to the planner's action while collecting, in [-1, 1] units
    obs_scale: float = 10.0  # divisor of the offset from C+ (the attractor spans ~40)
    reward_scale: float = 0.1  # the task's reward times this is what the critics regress, so values are O(10)
    alpha: float = 0.5  # CVaR level of the policy loss and of the planner's terminal value

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1, got {getattr(self, name)}" for name in
                    ("rounds", "episodes_per_round", "episode_steps", "updates_per_round", "batch_size",
                     "buffer_size") if getattr(self, name) < 1]
        if not 0 <= self.seed_rounds <= self.rounds:
            problems.append(f"seed_rounds: must lie in [0, rounds = {self.rounds}], got {self.seed_rounds}")
        for name in ("obs_scale", "reward_scale"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.exploration_std < 0:
            problems.append(f"exploration_std: must be >= 0, got {self.exploration_std}")
        if not 0 < self.alpha <= 1:
            problems.append(f"alpha: must lie in (0, 1], got {self.alpha}")
        if problems:
            raise ValueError("TDMPC2TrainConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "TDMPC2TrainConfig":
        return dataclasses.replace(self, **changes)


class LorenzEpisodes(NamedTuple):
    """Episodes from :func:`run_tdmpc2_episodes` (leading ``E`` axis on each field).

    Attributes:
        obs: ``(E, T + 1, 3)`` observations, the start's included.
        action: ``(E, T, 3)`` actions in ``[-1, 1]``.
        reward: ``(E, T)`` the task's rewards (unscaled).
        distance: ``(E, T)`` distance to C+ after each decision.
    """

    obs: Float[Array, "E T1 3"]
    action: Float[Array, "E T 3"]
    reward: Float[Array, "E T"]
    distance: Float[Array, "E T"]


def lorenz_observation(env: LorenzControlConfig, position: Float[Array, " 3"], obs_scale: float) -> Float[Array, " 3"]:
    """What the agent sees: ``(position - C+) / obs_scale``."""
    return (position - lorenz_fixed_point(env).astype(position.dtype)) / obs_scale


@eqx.filter_jit
def run_tdmpc2_episodes(
    state: TDMPC2State | None, env: LorenzControlConfig, plan: MPPIConfig, start_keys: PRNGKeyArray, *,
    steps: int, obs_scale: float, alpha: float | Float[Array, ""], exploration_std: float | Float[Array, ""] = 0.0,
    key: PRNGKeyArray,
) -> LorenzEpisodes:
    """Episodes of ``steps`` decisions from ``lorenz_control_reset`` at each of ``start_keys``, acting
    by :func:`tdmpc2_plan` with ``state``'s model and policy (plus ``N(0, exploration_std)`` noise,
    clipped), or uniformly at random when ``state`` is None."""
    target = lorenz_fixed_point(env)

    def episode(start_key, episode_key):
        def decide(carry, decision_key):
            env_state, mean = carry
            obs = lorenz_observation(env, env_state.position, obs_scale)
            plan_key, noise_key = jax.random.split(decision_key)
            if state is None:
                action, next_mean = jax.random.uniform(plan_key, (3,), minval=-1.0, maxval=1.0), mean
            else:
                result = tdmpc2_plan(state.model, state.policy, obs, mean, alpha=alpha, config=plan, key=plan_key)
                noise = exploration_std * jax.random.normal(noise_key, (3,))
                action, next_mean = jnp.clip(result.action + noise, -1.0, 1.0), result.next_mean
            env_state, reward, _ = lorenz_control_step(env, env_state, action * env.u_max)
            return (env_state, next_mean), (obs, action, reward, jnp.linalg.norm(env_state.position - target))

        start = lorenz_control_reset(env, key=start_key)
        carry = (start, jnp.zeros((plan.horizon, plan.action_dim)))
        (last, _), (obs, action, reward, distance) = jax.lax.scan(decide, carry, jax.random.split(episode_key, steps))
        obs = jnp.concatenate([obs, lorenz_observation(env, last.position, obs_scale)[None]], axis=0)
        return LorenzEpisodes(obs, action, reward, distance)

    return jax.vmap(episode)(start_keys, jax.random.split(key, start_keys.shape[0]))


def episode_windows(episodes: LorenzEpisodes, horizon: int, reward_scale: float) -> TDMPC2Batch:
    """Every sub-trajectory of ``horizon`` decisions of every episode, ``(E (T - H + 1), ...)``, its
    rewards times ``reward_scale``: what enters the replay buffer."""
    steps = episodes.action.shape[1]
    starts = jnp.arange(steps - horizon + 1)
    obs_index = starts[:, None] + jnp.arange(horizon + 1)[None, :]  # (W, H + 1)
    step_index = obs_index[:, :-1]  # (W, H)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (E, W, ...) -> (E W, ...)
    return TDMPC2Batch(flat(episodes.obs[:, obs_index]), flat(episodes.action[:, step_index]),
                       flat(episodes.reward[:, step_index] * reward_scale))


@eqx.filter_jit
def _train_round(state: TDMPC2State, buffer: ReplayState, *, updates: int, batch_size: int, alpha: Array,
                 key: PRNGKeyArray):
    def update(state, update_key):
        sample_key, step_key = jax.random.split(update_key)
        batch = replay_sample(buffer, batch_size, key=sample_key)
        return tdmpc2_update(state, batch, alpha, key=step_key)

    return jax.lax.scan(update, state, jax.random.split(key, updates))


def train_tdmpc2_lorenz(
    config: TDMPC2Config, plan: MPPIConfig, train: TDMPC2TrainConfig, env: LorenzControlConfig, *,
    key: PRNGKeyArray,
) -> tuple[TDMPC2State, list[dict[str, float]]]:
    """Train a TD-MPC2 agent on the Lorenz control task (schedule in the module docstring).

    Returns:
        The learner and one record per round: ``round``, ``mean_reward`` (the task's, per decision,
        over the round's episodes), ``final_distance`` (median), and the mean of each update metric
        over the round's updates.

    Raises:
        ValueError: ``config`` does not fit the task (3 observations, 3 actions).
    """
    if config.obs_dim != 3 or config.action_dim != 3:
        raise ValueError(f"config.obs_dim, config.action_dim: must be 3 and 3 for the Lorenz task, got "
                         f"{config.obs_dim}, {config.action_dim}")
    if train.episode_steps <= config.horizon:
        raise ValueError(f"episode_steps: must exceed config.horizon ({config.horizon}), got {train.episode_steps}")
    init_key, start_key, act_key, update_key = jax.random.split(key, 4)
    state = tdmpc2_init(config, key=init_key)
    example = jax.tree_util.tree_map(
        lambda x: x[0], TDMPC2Batch(jnp.zeros((1, config.horizon + 1, 3)), jnp.zeros((1, config.horizon, 3)),
                                    jnp.zeros((1, config.horizon))))
    buffer = replay_init(train.buffer_size, example)
    alpha = jnp.asarray(train.alpha, jnp.float32)
    history = []
    for round_index in range(train.rounds):
        starts = jax.random.split(jax.random.fold_in(start_key, round_index), train.episodes_per_round)
        episodes = run_tdmpc2_episodes(
            None if round_index < train.seed_rounds else state, env, plan, starts, steps=train.episode_steps,
            obs_scale=train.obs_scale, alpha=alpha, exploration_std=jnp.asarray(train.exploration_std, jnp.float32),
            key=jax.random.fold_in(act_key, round_index))
        buffer = replay_add_batch(buffer, episode_windows(episodes, config.horizon, train.reward_scale))
        state, metrics = _train_round(state, buffer, updates=train.updates_per_round, batch_size=train.batch_size,
                                      alpha=alpha, key=jax.random.fold_in(update_key, round_index))
        history.append({"round": round_index, "mean_reward": float(jnp.mean(episodes.reward)),
                        "final_distance": float(np.median(np.asarray(episodes.distance[:, -1]))),
                        **{name: float(jnp.mean(value)) for name, value in metrics.items()}})
    return state, history
