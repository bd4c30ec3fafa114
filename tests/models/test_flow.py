"""FlowMamba: the closed-loop rollout against the teacher-forced pass, the dense readout, the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import FlowConfig, FlowMamba, flow_loss

TINY = FlowConfig(channels=3, d_model=16, n_layers=2, d_state=8, head_dim=8, mlp_width=16, mlp_layers=2,
                  chunk_size=8)


@pytest.fixture(scope="module")
def model():
    return FlowMamba(TINY, key=jax.random.key(1))


@pytest.fixture(scope="module")
def series():
    return jnp.asarray(np.random.default_rng(0).standard_normal((21, 3)), jnp.float32)


def test_rollout_steps_are_the_teacher_forced_pass_on_its_own_outputs(model, series):
    scale = jnp.asarray([0.5, 1.0, 2.0])
    path = model.rollout(series, 3, scale)
    # The slow way: re-read the whole sequence after each appended prediction (chunked scan).
    grown = series
    for _ in range(3):
        increment = model(grown)[0][-1]
        grown = jnp.concatenate([grown, (grown[-1] + scale * increment)[None]])
    np.testing.assert_allclose(path, grown[-3:], rtol=1e-4, atol=1e-5)


def test_a_perturbed_start_replaces_the_last_state(model, series):
    scale = jnp.ones(3)
    start = series[-1] + 0.1
    path = model.rollout(series, 2, scale, start=start)
    reread = jnp.concatenate([series[:-1], start[None]])
    np.testing.assert_allclose(path, model.rollout(reread, 2, scale), rtol=1e-5, atol=1e-6)


def test_dense_readout_sees_the_input_and_every_hidden_layer(model, series):
    features = model.readout_features(series)
    assert features.shape == (21, 3 + 16 + 2 * 16)
    np.testing.assert_allclose(features[:, :3], series)  # the raw state is a feature
    increments = model(series)[0]
    np.testing.assert_allclose(features @ model.step.readout + model.step.readout_bias[None], increments, rtol=1e-5,
                               atol=1e-6)
    weights = np.zeros((features.shape[1], 3), np.float32)
    weights[:3] = np.eye(3)  # readout = the state itself
    swapped = model.with_readout(weights, np.zeros(3))
    np.testing.assert_allclose(swapped(series)[0], series, rtol=1e-6)


def test_teacher_forced_loss_is_the_mean_squared_increment_error(model, series):
    scale = np.array([0.5, 1.0, 2.0], np.float32)
    batch = {"states": series[None], "scale": jnp.broadcast_to(scale, (1, 21, 3))}
    loss, metrics = flow_loss(model, batch, warmup=4)
    predicted = np.asarray(model(series[:-1])[0])
    target = np.diff(np.asarray(series), axis=0) / scale
    assert float(loss) == pytest.approx(np.mean((predicted[4:] - target[4:]) ** 2), rel=1e-5)
    assert set(metrics) == {"one_step"}


def test_rollout_loss_scores_the_closed_loop_states_in_increment_units(model, series):
    scale = np.array([0.5, 1.0, 2.0], np.float32)
    batch = {"states": series[None], "scale": jnp.broadcast_to(scale, (1, 21, 3))}
    loss, metrics = flow_loss(model, batch, warmup=0, rollout=5, rollout_weight=2.0)
    path = np.asarray(model.rollout(series[:16], 5, jnp.asarray(scale)))
    expected = np.mean(((path - np.asarray(series[16:])) / scale) ** 2)
    assert float(metrics["rollout"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(float(metrics["one_step"]) + 2.0 * expected, rel=1e-5)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="channels: must be >= 1"):
        FlowConfig(channels=0)
