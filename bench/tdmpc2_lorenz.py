"""TD-MPC2 on the Lorenz-63 control task: a world model, quantile critics and a policy prior learnt
from the agent's own episodes, planning with MPPI in its latent space, scored on 20 fresh starts
beside no control and MPPI in the known equations (bench/control_lorenz.py's settings).

Seeds: the agent's initialisation, training starts, actions and batches all derive from seed 5;
the 20 scored starts come from seed 1 (as in bench/control_lorenz.py, disjoint from training);
the planners' sampling keys from seed 4.

    python bench/tdmpc2_lorenz.py [--rounds R] [--updates U]
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

import jax

from chaosfm.agents import (
    MPPIConfig,
    TDMPC2Config,
    TDMPC2TrainConfig,
    lorenz_observation,
    tdmpc2_plan,
    train_tdmpc2_lorenz,
)

_spec = importlib.util.spec_from_file_location("control_lorenz", pathlib.Path(__file__).with_name("control_lorenz.py"))
control_lorenz = importlib.util.module_from_spec(_spec)
sys.modules["control_lorenz"] = control_lorenz  # its dataclasses look their module up by name
_spec.loader.exec_module(control_lorenz)

TRAIN_SEED = 5
MODEL = TDMPC2Config(obs_dim=3, action_dim=3, latent_dim=32, simnorm_dim=8, hidden=64, num_q=5, num_quantiles=32)
PLAN = MPPIConfig(action_dim=3, horizon=3, num_samples=64, num_elites=8, iterations=4, temperature=0.5,
                  min_std=0.05, max_std=1.0, discount=MODEL.discount, num_policy_samples=8)
TRAIN = TDMPC2TrainConfig()


def tdmpc2_controller(state, env, train, plan):
    def decide(position, mean, key):
        obs = lorenz_observation(env, position, train.obs_scale)
        result = tdmpc2_plan(state.model, state.policy, obs, mean, alpha=train.alpha, config=plan, key=key)
        return result.action * env.u_max, result.next_mean

    return decide


def policy_controller(state, env, train):
    def decide(position, mean, key):
        z = state.model.encode(lorenz_observation(env, position, train.obs_scale))
        return state.policy.mode(z, train.alpha) * env.u_max, mean

    return decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=TRAIN.rounds, help="collection rounds (seed rounds included)")
    parser.add_argument("--updates", type=int, default=TRAIN.updates_per_round, help="updates per round")
    args = parser.parse_args()
    t0 = time.time()
    train = TRAIN.replace(rounds=args.rounds, updates_per_round=args.updates)
    env = control_lorenz.ENV
    print(f"{MODEL}\n{PLAN}\n{train}\n{env}\nJAX {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    t = time.time()
    state, history = train_tdmpc2_lorenz(MODEL, PLAN, train, env, key=jax.random.key(TRAIN_SEED))
    train_seconds = time.time() - t
    for h in history:
        print(f"round {h['round']:2d}: mean reward {h['mean_reward']:8.3f}  median final distance "
              f"{h['final_distance']:7.3f}  consistency {h['consistency']:.2e}  reward {h['reward']:.3f}  "
              f"td {h['td']:.3f}  policy {h['policy']:.3f}", flush=True)
    n_params = sum(leaf.size for leaf in jax.tree.leaves((state.model, state.policy)) if isinstance(leaf, jax.Array))
    print(f"trained in {train_seconds:.1f}s: {train.rounds} rounds x {train.episodes_per_round} episodes of "
          f"{train.episode_steps} decisions, {int(state.step)} updates, {n_params} parameters", flush=True)

    starts = jax.random.split(jax.random.key(control_lorenz.EVAL_SEED), control_lorenz.N_STARTS)
    plan_key = jax.random.key(control_lorenz.PLAN_SEED)
    known_plan = control_lorenz.planner_config(env, control_lorenz.HORIZON, control_lorenz.SAMPLES,
                                               control_lorenz.ITERATIONS)
    dynamics, (reward, value) = control_lorenz.known_model(env)
    controllers = [
        ("none", control_lorenz.no_control, known_plan.horizon),
        ("MPPI, known equations", control_lorenz.mppi_controller(known_plan, dynamics, reward, value),
         known_plan.horizon),
        ("TD-MPC2 policy prior alone", policy_controller(state, env, train), PLAN.horizon),
        ("TD-MPC2 (MPPI in the latent)", tdmpc2_controller(state, env, train, PLAN), PLAN.horizon),
    ]
    rows = []
    for name, decide, horizon in controllers:
        rows.append(control_lorenz.summarise(env, name, *control_lorenz.run_controller(
            env, decide, horizon, starts, key=plan_key)))
        print(control_lorenz.plain_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(control_lorenz.plain_table(rows))
    print()
    print(control_lorenz.table(rows))
    print(f"known-model MPPI: {known_plan.iterations * known_plan.num_samples * known_plan.horizon} model calls per "
          f"decision; TD-MPC2: {PLAN.iterations * PLAN.num_samples * PLAN.horizon}")
    print(f"total {time.time() - t0:.1f}s (training {train_seconds:.1f}s)")


if __name__ == "__main__":
    main()
