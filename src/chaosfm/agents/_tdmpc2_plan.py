"""TD-MPC2's planning: MPPI in the world model's latent space (Hansen et al. 2024, Sec. 3,
"Planning"): the latent dynamics and reward head roll the candidate action sequences, the
ensemble critic's CVaR at the policy's action is the terminal value, and the policy prior adds its
own rollouts to the candidates."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from chaosfm.agents._mppi import MPPIConfig, MPPIResult, mppi_plan
from chaosfm.agents._tdmpc2 import TDMPC2Policy, TDMPC2WorldModel, ensemble_cvar

__all__ = ["tdmpc2_plan"]


class _LatentDynamics(eqx.Module):
    model: TDMPC2WorldModel

    def __call__(self, z, action):
        return self.model.next(z, action)


class _LatentReward(eqx.Module):
    model: TDMPC2WorldModel

    def __call__(self, z, action):
        return self.model.reward(z, action)


class _TerminalValue(eqx.Module):
    model: TDMPC2WorldModel
    policy: TDMPC2Policy
    alpha: Array

    def __call__(self, z):
        return ensemble_cvar(self.model.quantiles(z, self.policy.mode(z, self.alpha)), self.alpha)


class _Prior(eqx.Module):
    """The policy at the decision's CVaR level, as :func:`mppi_plan` calls a prior."""

    policy: TDMPC2Policy
    alpha: Array

    def __call__(self, z, *, key):
        return self.policy(z, self.alpha, key=key)


@eqx.filter_jit
def tdmpc2_plan(
    model: TDMPC2WorldModel, policy: TDMPC2Policy, obs: Float[Array, " O"], mean: Float[Array, "H A"] | None = None,
    *, alpha: float | Float[Array, ""], trade: bool | Bool[Array, ""] = True, config: MPPIConfig,
    key: PRNGKeyArray,
) -> MPPIResult:
    """One decision by :func:`mppi_plan` in the latent space of ``model`` from ``h(obs)``.

    Dynamics ``d``, reward ``R``, terminal value ``CVaR_alpha`` of the ensemble-averaged critic at
    ``pi``'s deterministic action, and ``config.num_policy_samples`` rollouts of ``pi`` among the
    candidates (TD-MPC2 Sec. 3, "Planning"), ``pi`` at the level ``alpha`` (its input when the
    model's ``alpha_input`` is set). With ``trade`` false the action is 0 (flat); the
    rest of the result is the plan's.

    Raises:
        ValueError: ``config`` disagrees with the model's action width or discount, or its bounds
            leave ``[-1, 1]``.
    """
    c = model.config
    if config.action_dim != c.action_dim:
        raise ValueError(f"config.action_dim: must equal the model's action_dim ({c.action_dim}), got "
                         f"{config.action_dim}")
    if config.discount != c.discount:
        raise ValueError(f"config.discount: must equal the model's discount ({c.discount}) its critics learnt, "
                         f"got {config.discount}")
    if config.action_low < -1 or config.action_high > 1:
        raise ValueError(f"config.action_low, action_high: must lie within the model's [-1, 1], got "
                         f"{config.action_low}, {config.action_high}")
    alpha = jnp.asarray(alpha, jnp.float32)
    value = _TerminalValue(model, policy, alpha)
    prior = _Prior(policy, alpha) if config.num_policy_samples > 0 else None
    result = mppi_plan(config, _LatentDynamics(model), _LatentReward(model), value, model.encode(obs), mean, prior,
                       key=key)
    return result._replace(action=jnp.where(jnp.asarray(trade), result.action, jnp.zeros_like(result.action)))
