"""A two-parameter model and loss for exercising the loop itself cheaply."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class Toy(eqx.Module):
    w: jax.Array
    v: jax.Array


def toy_model() -> Toy:
    return Toy(w=jnp.zeros((3, 2)), v=jnp.ones((2,)))


def toy_loss(model, batch, key):
    # Noise from the loop's key: a resumed run only matches if the key was restored too.
    x = batch["x"] + 0.1 * jax.random.normal(key, batch["x"].shape)
    fit = jnp.mean((x @ model.w - batch["y"]) ** 2)
    # sqrt(v² gate) has a finite value but an infinite/NaN gradient when gate is 0.
    return fit + 0.01 * jnp.sum(jnp.sqrt(model.v**2 * batch["gate"])), {"fit": fit}


def toy_batches(poison_step: int | None = None):
    def batch_at(step):
        rng = np.random.default_rng([7, step])
        x = rng.standard_normal((8, 3)).astype(np.float32)
        y = x @ np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]], np.float32)
        gate = np.float32(0.0 if step == poison_step else 1.0)
        return {"x": x, "y": y, "gate": gate}

    return batch_at
