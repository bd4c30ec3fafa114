"""Steering Lorenz-63 onto its fixed point C+ with a small bounded forcing: no control, random
shooting and MPPI, the two planners given the same budget of model calls per decision, planning
in the known equations and (``--learned``) in a small learned dynamics model.

Seeds: starts of the tuning episodes come from seed 0 (``--tune`` prints the grid the settings
below were chosen on, on those starts only), the 20 scored starts from seed 1, the learned model's
training rollouts from seed 2 and its initialisation and batches from seed 3; the planners' own
sampling keys from seed 4.

    python bench/control_lorenz.py [--learned] [--tune]
"""
from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from chaosfm.agents import (
    LorenzControlConfig,
    MPPIConfig,
    lorenz_control_dynamics,
    lorenz_control_reset,
    lorenz_control_reward,
    lorenz_control_step,
    lorenz_control_success,
    lorenz_fixed_point,
    mppi_plan,
    random_shooting_plan,
)

TUNE_SEED, EVAL_SEED, DATA_SEED, MODEL_SEED, PLAN_SEED = 0, 1, 2, 3, 4
N_STARTS = 20
ENV = LorenzControlConfig(u_max=2.0)
HORIZON, SAMPLES, ITERATIONS = 10, 64, 4  # picked by --tune on the tuning starts
TUNE_GRID = dict(u_max=(1.0, 2.0), horizon=(5, 10), samples=(32, 64))
TERMINAL_WEIGHT = 10.0  # the terminal value is -TERMINAL_WEIGHT * distance: staying there matters beyond H


def planner_config(env: LorenzControlConfig, horizon: int, samples: int, iterations: int) -> MPPIConfig:
    return MPPIConfig(action_dim=3, horizon=horizon, num_samples=samples, num_elites=max(samples // 8, 1),
                      iterations=iterations, temperature=1.0, min_std=0.05 * env.u_max, max_std=env.u_max,
                      action_low=-env.u_max, action_high=env.u_max, discount=0.99)


def known_model(env: LorenzControlConfig):
    dynamics = lambda z, a: lorenz_control_dynamics(env, z, a)  # noqa: E731
    return dynamics, _objective(env)


def _objective(env):
    # the task's reward at the state a decision starts from (no extra model call for the state it
    # reaches), the terminal value pressing on the distance at the end of the horizon
    reward = lambda z, a: lorenz_control_reward(env, z, a)  # noqa: E731
    target = lorenz_fixed_point(env)
    value = lambda z: -TERMINAL_WEIGHT * jnp.linalg.norm(z - target)  # noqa: E731
    return reward, value


# ---- a learned dynamics model: z' = z + scale * MLP((z - mean) / scale, u / u_max) ----------------


class LearnedDynamics(eqx.Module):
    mlp: eqx.nn.MLP
    state_mean: jax.Array
    state_scale: jax.Array
    delta_scale: jax.Array
    u_max: float = eqx.field(static=True)

    def __call__(self, z, a):
        # the normalisers are fixed from the training data, not fitted by the optimiser
        mean, scale, delta_scale = jax.lax.stop_gradient((self.state_mean, self.state_scale, self.delta_scale))
        a = jnp.clip(a, -self.u_max, self.u_max) / self.u_max
        return z + delta_scale * self.mlp(jnp.concatenate([(z - mean) / scale, a]))


def random_forcing_rollouts(env, episodes: int, steps: int, *, key):
    """Transitions ``(z, u, z')`` of episodes on the attractor under uniform random forcing."""
    reset_keys, action_keys = jax.random.split(key)

    def episode(reset_key, action_key):
        start = lorenz_control_reset(env, key=reset_key).position
        actions = jax.random.uniform(action_key, (steps, 3), minval=-env.u_max, maxval=env.u_max)

        def advance(z, u):
            nxt = lorenz_control_dynamics(env, z, u)
            return nxt, (z, u, nxt)

        return jax.lax.scan(advance, start, actions)[1]

    z, u, nxt = jax.jit(jax.vmap(episode))(jax.random.split(reset_keys, episodes),
                                           jax.random.split(action_keys, episodes))
    return z.reshape(-1, 3), u.reshape(-1, 3), nxt.reshape(-1, 3)


def train_learned_model(env, *, width=128, depth=3, train_steps=6000, batch=512, key):
    model_key, batch_key = jax.random.split(key)
    episodes, steps = 256, 200
    z, u, nxt = random_forcing_rollouts(env, episodes=episodes, steps=steps, key=jax.random.key(DATA_SEED))
    held_out = 26 * steps  # the last 26 whole episodes (about a tenth) score the fit
    delta = nxt - z
    model = LearnedDynamics(
        mlp=eqx.nn.MLP(6, 3, width, depth, activation=jax.nn.silu, key=model_key),
        state_mean=z[:-held_out].mean(0), state_scale=z[:-held_out].std(0),
        delta_scale=delta[:-held_out].std(0), u_max=env.u_max,
    )
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-3, train_steps))

    def loss(model, z, u, nxt):
        predicted = jax.vmap(model)(z, u)
        return jnp.mean(((predicted - nxt) / model.delta_scale) ** 2)

    params, static = eqx.partition(model, eqx.is_array)
    opt_state = optimizer.init(params)

    @jax.jit
    def train(params, opt_state):
        def update(carry, step_key):
            params, opt_state = carry
            index = jax.random.randint(step_key, (batch,), 0, len(z) - held_out)
            value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static), z[index], u[index],
                                                             nxt[index]))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(update, (params, opt_state),
                                                   jax.random.split(batch_key, train_steps))
        return params, losses

    params, losses = train(params, opt_state)
    model = eqx.combine(params, static)
    test = slice(len(z) - held_out, None)
    test_error = float(jnp.sqrt(jnp.mean(jnp.sum((jax.vmap(model)(z[test], u[test]) - nxt[test]) ** 2, -1))))
    return model, float(losses[-200:].mean()), test_error


# ---- episodes ------------------------------------------------------------------------------------


def no_control(position, mean, key):
    return jnp.zeros(3), mean


def shooting_controller(plan_config, dynamics, reward, value):
    """Random shooting with the budget of ``plan_config``'s MPPI: iterations * samples sequences."""
    config = plan_config.replace(num_samples=plan_config.num_samples * plan_config.iterations, iterations=1,
                                 num_elites=1)

    def decide(position, mean, key):
        result = random_shooting_plan(config, dynamics, reward, value, position, key=key)
        return result.action, result.next_mean

    return decide


def mppi_controller(plan_config, dynamics, reward, value):
    def decide(position, mean, key):
        result = mppi_plan(plan_config, dynamics, reward, value, position, mean, key=key)
        return result.action, result.next_mean

    return decide


def run_controller(env, decide, horizon, starts, *, key):
    """Distances to the target after each decision ``(starts, T)``, per-decision costs, seconds of
    the vmapped episodes (compiled beforehand)."""
    target = lorenz_fixed_point(env)

    def episode(start_key, plan_key):
        def step(carry, decision_key):
            state, mean = carry
            action, next_mean = decide(state.position, mean, decision_key)
            state, step_reward, _ = lorenz_control_step(env, state, action)
            return (state, next_mean), (jnp.linalg.norm(state.position - target), -step_reward)

        carry = (lorenz_control_reset(env, key=start_key), jnp.zeros((horizon, 3)))
        return jax.lax.scan(step, carry, jax.random.split(plan_key, env.episode_steps))[1]

    run = jax.jit(jax.vmap(episode))
    plan_keys = jax.random.split(key, len(starts))
    jax.block_until_ready(run(starts, plan_keys))  # compile
    t = time.perf_counter()
    distances, costs = jax.block_until_ready(run(starts, plan_keys))
    seconds = time.perf_counter() - t
    return np.asarray(distances), np.asarray(costs), seconds


def controllers(plan_config, dynamics, reward, value):
    return {"random shooting": shooting_controller(plan_config, dynamics, reward, value),
            "MPPI": mppi_controller(plan_config, dynamics, reward, value)}


def summarise(env, name, distances, costs, seconds):
    success = np.asarray(lorenz_control_success(env, jnp.asarray(distances)))
    return dict(controller=name, successes=int(success.sum()), n=len(success),
                median_final=float(np.median(distances[:, -1])), mean_cost=float(costs.mean()),
                ms_per_decision=1e3 * seconds / distances.size)


def plain_table(rows) -> str:
    lines = [f"{'controller':32s} {'successes':>9s} {'median final':>12s} {'mean cost':>9s} {'ms/decision':>11s}"]
    for r in rows:
        lines.append(f"{r['controller']:32s} {r['successes']:>6d}/{r['n']:<2d} {r['median_final']:12.3f} "
                     f"{r['mean_cost']:9.3f} {r['ms_per_decision']:11.2f}")
    return "\n".join(lines)


def table(rows) -> str:
    lines = ["| controller | successes | median final distance | mean cost per decision | ms per decision |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['controller']} | {r['successes']}/{r['n']} | {r['median_final']:.3f} | "
                     f"{r['mean_cost']:.3f} | {r['ms_per_decision']:.2f} |")
    return "\n".join(lines)


def tune() -> None:
    """The grid the defaults were picked from, on the tuning starts (seed 0) and the known model."""
    starts = jax.random.split(jax.random.key(TUNE_SEED), N_STARTS)
    for u_max in TUNE_GRID["u_max"]:
        env = ENV.replace(u_max=u_max)
        dynamics, (reward, value) = known_model(env)
        for horizon in TUNE_GRID["horizon"]:
            for samples in TUNE_GRID["samples"]:
                plan = planner_config(env, horizon, samples, ITERATIONS)
                rows = [summarise(env, name, *run_controller(env, decide, horizon, starts,
                                                               key=jax.random.key(PLAN_SEED)))
                        for name, decide in controllers(plan, dynamics, reward, value).items()]
                for r in rows:
                    print(f"u_max {u_max} horizon {horizon} samples {samples}: {r['controller']:15s} "
                          f"{r['successes']}/{r['n']} median final {r['median_final']:.3f} "
                          f"mean cost {r['mean_cost']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learned", action="store_true", help="also plan in a learned dynamics model")
    parser.add_argument("--tune", action="store_true", help="print the tuning grid on the tuning starts instead")
    args = parser.parse_args()
    t0 = time.time()
    if args.tune:
        tune()
        print(f"total {time.time() - t0:.1f}s")
        return
    starts = jax.random.split(jax.random.key(EVAL_SEED), N_STARTS)
    plan_key = jax.random.key(PLAN_SEED)
    env = ENV
    plan = planner_config(env, HORIZON, SAMPLES, ITERATIONS)
    calls = plan.iterations * plan.num_samples * plan.horizon
    print(f"{env}\n{plan}\nscored starts from seed {EVAL_SEED}; budget per decision {calls} model calls for both "
          f"planners ({calls * env.hold_steps} RK4 steps in the known model); JAX {jax.__version__} on "
          f"{jax.devices()[0].platform}")
    dynamics, (reward, value) = known_model(env)
    rows = [summarise(env, "none", *run_controller(env, no_control, plan.horizon, starts, key=plan_key))]
    for name, decide in controllers(plan, dynamics, reward, value).items():
        rows.append(summarise(env, name, *run_controller(env, decide, plan.horizon, starts, key=plan_key)))
    if args.learned:
        t = time.time()
        model, train_loss, test_error = train_learned_model(env, key=jax.random.key(MODEL_SEED))
        n_params = sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model.mlp, eqx.is_array)))
        print(f"learned model: {n_params} parameters, trained in {time.time() - t:.1f}s, final normalised loss "
              f"{train_loss:.2e}, held-out one-decision error {test_error:.3f} (RMS distance)")
        for name, decide in controllers(plan, model, reward, value).items():
            row = summarise(env, name, *run_controller(env, decide, plan.horizon, starts, key=plan_key))
            rows.append(dict(row, controller=f"{name} (learned model)"))
    print(plain_table(rows))
    print()
    print(table(rows))
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
