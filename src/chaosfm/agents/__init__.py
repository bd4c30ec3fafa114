"""Strate III/IV agents: Multiverse Crossing, a confidence filter built on the JEPA's flow head, and
the core of a distributional agent: QR-DQN with a CVaR critic, a replay buffer, a soft
cross-sectional allocation, a cross-sectional trading environment, and the loop that trains the
agent on it and evaluates it beside baselines on one shared calendar."""

from chaosfm.agents._allocation import soft_allocation
from chaosfm.agents._control import (
    LorenzControlConfig,
    LorenzControlState,
    lorenz_control_dynamics,
    lorenz_control_reset,
    lorenz_control_reward,
    lorenz_control_step,
    lorenz_control_success,
    lorenz_controlled_field,
    lorenz_fixed_point,
    rk4_step,
)
from chaosfm.agents._encoder import EncoderFeatures, encoder_features
from chaosfm.agents._env import (
    EnvConfig,
    EnvState,
    MarketPanel,
    StepOutput,
    eligible_starts,
    env_observe,
    env_reset,
    env_reset_at,
    env_step,
    market_panel,
)
from chaosfm.agents._mppi import MPPIConfig, MPPIResult, mppi_plan, random_shooting_plan, rollout_return
from chaosfm.agents._multiverse import (
    CrossingScores,
    confidence_filter,
    crossing_scores,
    filter,
    multiverse,
    tangent_perturb,
)
from chaosfm.agents._qrdqn import (
    AgentState,
    QRDQNConfig,
    QuantileNetwork,
    qrdqn_act,
    qrdqn_init,
    qrdqn_loss,
    qrdqn_train_step,
)
from chaosfm.agents._quantile import cvar_from_quantiles, quantile_huber_loss, quantile_midpoints
from chaosfm.agents._replay import (
    ReplayState,
    Transition,
    replay_add,
    replay_add_batch,
    replay_init,
    replay_sample,
)
from chaosfm.agents._evaluation import evaluate_agent, evaluate_gate
from chaosfm.agents._trainer import AgentTrainConfig, train_agent

__all__ = [
    "AgentState",
    "AgentTrainConfig",
    "CrossingScores",
    "EncoderFeatures",
    "EnvConfig",
    "EnvState",
    "LorenzControlConfig",
    "LorenzControlState",
    "MPPIConfig",
    "MPPIResult",
    "MarketPanel",
    "QRDQNConfig",
    "QuantileNetwork",
    "ReplayState",
    "StepOutput",
    "Transition",
    "confidence_filter",
    "crossing_scores",
    "cvar_from_quantiles",
    "eligible_starts",
    "encoder_features",
    "evaluate_agent",
    "evaluate_gate",
    "env_observe",
    "env_reset",
    "env_reset_at",
    "env_step",
    "filter",
    "lorenz_control_dynamics",
    "lorenz_control_reset",
    "lorenz_control_reward",
    "lorenz_control_step",
    "lorenz_control_success",
    "lorenz_controlled_field",
    "lorenz_fixed_point",
    "market_panel",
    "mppi_plan",
    "multiverse",
    "qrdqn_act",
    "qrdqn_init",
    "qrdqn_loss",
    "qrdqn_train_step",
    "quantile_huber_loss",
    "quantile_midpoints",
    "random_shooting_plan",
    "replay_add",
    "replay_add_batch",
    "replay_init",
    "replay_sample",
    "rk4_step",
    "rollout_return",
    "soft_allocation",
    "tangent_perturb",
    "train_agent",
]
