"""Meta-parameters learned online by gradient on the one-step CRPS (``predictor/_meta.py``)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import scoringrules

from chaosfm.evaluate import crps
from chaosfm.predictor import PredictorConfig, init_predictor, update_predictor
from chaosfm.predictor._meta import (
    MetaParams,
    OneStep,
    crps_and_gradient,
    init_meta,
    initial_meta,
    meta_optimizer,
    mixture_components,
    mixture_crps,
    one_step_crps,
    remember,
    update_meta,
)
from chaosfm.predictor._orchestrator import OrchestratorState, init_orchestrator, mixing_weights, update_orchestrator

K = 4
EMERGENCY_KERNEL = 3
# Compiled: ott's Sinkhorn and its implicit backward pass run op by op otherwise (minutes).
_crps_and_gradient = jax.jit(crps_and_gradient, static_argnums=(2, 3))


def _quadrature_crps(weights, draws, observed):
    """``int (F(z) - 1{z >= y})^2 dz`` of the weighted empirical CDF, exact between its jumps."""
    points = np.concatenate([draws.reshape(-1), [observed]])
    masses = np.concatenate([np.repeat(weights / draws.shape[1], draws.shape[1]), [0.0]])
    order = np.argsort(points)
    points, masses = points[order], masses[order]
    cdf = np.cumsum(masses)[:-1]
    step = (points[:-1] >= observed).astype(float)
    return float(np.sum((cdf - step) ** 2 * np.diff(points)))


def test_mixture_crps_matches_quadrature_and_scoringrules():
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((3, 50)) * np.array([[0.5], [1.0], [2.0]]) + np.array([[-1.0], [0.0], [1.5]])
    weights = np.array([0.2, 0.5, 0.3])
    for observed in (-0.7, 0.1, 2.4):
        plain = float(mixture_crps(jnp.asarray(weights), jnp.asarray(draws), jnp.asarray(observed), fair=False))
        assert plain == pytest.approx(_quadrature_crps(weights, draws, observed), rel=1e-5)
        members = draws.reshape(-1)
        member_weights = np.repeat(weights / draws.shape[1], draws.shape[1])
        reference = float(scoringrules.crps_ensemble(observed, members, ens_w=member_weights, estimator="nrg"))
        assert plain == pytest.approx(reference, rel=1e-5)


def test_fair_mixture_crps_of_one_component_is_the_project_crps():
    rng = np.random.default_rng(1)
    draws = rng.standard_normal((1, 64))
    for observed in (-1.3, 0.2):
        fair = float(mixture_crps(jnp.ones((1,)), jnp.asarray(draws), jnp.asarray(observed)))
        assert fair == pytest.approx(float(crps(draws[0][:, None], np.array([observed]))[0]), rel=1e-5)
        plain = float(mixture_crps(jnp.ones((1,)), jnp.asarray(draws), jnp.asarray(observed), fair=False))
        assert fair < plain  # the plain form is biased upwards by E|X - X'| / (2 S)


def _one_step(draw_key, *, stepped=True, emergency=False, target=0.4):
    """A forecast with distinct kernels, so every meta-parameter changes its CRPS."""
    dtype = jnp.zeros(()).dtype
    means = jnp.asarray([0.6, -0.3, 0.1, 0.9], dtype)
    spreads = jnp.asarray([0.8, 1.2, 1.0, 0.6], dtype)
    gauss = jax.random.normal(draw_key, (K, 32), dtype)
    return OneStep(
        orchestrator=OrchestratorState(jnp.asarray([0.1, 0.2, 0.3, 0.4], dtype), jnp.zeros((2, K), dtype)),
        predictions=jnp.asarray([0.5, -0.4, 0.2, 1.1], dtype),
        observed=jnp.asarray(0.3, dtype),
        robust=jnp.asarray(False),
        stepped=jnp.asarray(stepped),
        weights=jnp.full((K,), 0.25, dtype),
        means=means,
        spreads=spreads,
        kernel_draws=means[:, None] + spreads[:, None] * gauss,
        normal_draws=jax.random.normal(jax.random.fold_in(draw_key, 1), (32,), dtype),
        emergency=jnp.asarray(emergency),
        suspended=jnp.zeros((K,), bool),
        target=jnp.asarray(target, dtype),
        active=jnp.asarray(True),
    )


_TIGHT = {"orchestrator": {"sinkhorn_threshold": 1e-11, "sinkhorn_max_iterations": 5000}}


@pytest.mark.slow  # compiles ott's implicit backward pass: 30-50 s on a loaded 2-core VM
def test_gradient_matches_central_differences():
    # Implicit differentiation through ott's Sinkhorn is exact at its fixed point: solve tightly, in
    # float64, and compare every meta-parameter's derivative with a central difference.
    config = PredictorConfig(drift=1.0, gaussian_share=0.25, **_TIGHT)
    with jax.enable_x64(True):
        step = _one_step(jax.random.key(0))
        params = MetaParams(jnp.log(jnp.asarray(0.1)), jnp.log(jnp.asarray(2.0)), jnp.asarray([0.2, -0.1, 0.0, 0.3]))
        loss = jax.jit(lambda p: one_step_crps(p, step, config, EMERGENCY_KERNEL))  # forward only: no implicit pass
        grads = _crps_and_gradient(params, step, config, EMERGENCY_KERNEL)[1]
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        analytic = jax.flatten_util.ravel_pytree(grads)[0]
        h = 1e-5
        numeric = np.array([
            (float(loss(unravel(flat.at[i].add(h)))) - float(loss(unravel(flat.at[i].add(-h))))) / (2 * h)
            for i in range(flat.size)
        ])
        assert np.all(np.abs(numeric) > 1e-4), numeric  # every parameter matters here
        np.testing.assert_allclose(np.asarray(analytic), numeric, rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # compiles ott's implicit backward pass: 30-50 s on a loaded 2-core VM
def test_weight_gradient_vanishes_where_the_weights_do_not_depend_on_the_step():
    # An emergency (one-hot weights) or a step the predictor did not take: only the temperatures
    # count (not rescaled to unit spread, which would cancel a lone kernel's temperature).
    config = PredictorConfig(drift=1.0, gaussian_share=0.0, unit_spread=False)
    params = initial_meta(config, K)
    for step in (_one_step(jax.random.key(1), emergency=True), _one_step(jax.random.key(1), stepped=False)):
        grads = _crps_and_gradient(params, step, config, EMERGENCY_KERNEL)[1]
        assert float(grads.log_epsilon) == 0.0 and float(grads.log_step_size) == 0.0
        assert float(jnp.max(jnp.abs(grads.log_temperatures))) > 1e-3


@pytest.mark.slow  # compiles ott's implicit backward pass: 30-50 s on a loaded 2-core VM
def test_default_config_forecast_ignores_the_meta_parameters():
    # gaussian_share = 1 and drift = 0 (the defaults): the forecast is N(0, 1) whatever the
    # kernels and their weights; learning has nothing to move: its gradient is 0 (to rounding),
    # where the kernels' own draws (gaussian_share = 0) give every parameter a gradient.
    step = _one_step(jax.random.key(2))
    inert = PredictorConfig()
    grads = _crps_and_gradient(initial_meta(inert, K), step, inert, EMERGENCY_KERNEL)[1]
    live = PredictorConfig(drift=1.0, gaussian_share=0.0)
    reference = _crps_and_gradient(initial_meta(live, K), step, live, EMERGENCY_KERNEL)[1]
    for g, r in zip(grads, reference):
        assert float(jnp.max(jnp.abs(g))) < 1e-6 < 1e-4 < float(jnp.max(jnp.abs(r)))


def _simulate(config, params, learn, key, steps=300):
    """Kernels predicting an AR(1) ``y_{t+1} = 0.8 y_t + e`` (unit noise): kernel 0 knows the
    coefficient, kernels 1-3 use 0, -0.8 and 1.6. Returns the forecasts' CRPS and the params."""
    optimizer = meta_optimizer(config)
    coefficients = jnp.asarray([0.8, 0.0, -0.8, 1.6])
    noise_key, draw_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, (steps,))

    def body(carry, inputs):
        meta, orchestrator, y = carry
        innovation, t = inputs
        target = 0.8 * y + innovation
        means = coefficients * y
        step_key = jax.random.fold_in(draw_key, t)
        step = OneStep(
            orchestrator=meta.previous_orchestrator,
            predictions=meta.previous_predictions,
            observed=y,
            robust=jnp.zeros((), bool),
            stepped=meta.previous_stepped,
            weights=orchestrator.weights,
            means=means,
            spreads=jnp.ones((K,)),
            kernel_draws=means[:, None] + jax.random.normal(step_key, (K, 64)),
            normal_draws=jax.random.normal(jax.random.fold_in(step_key, 1), (64,)),
            emergency=jnp.zeros((), bool),
            suspended=jnp.zeros((K,), bool),
            target=target,
            active=t > 0,
        )
        # The forecast as it was made: the orchestrator's weights, the temperatures of then.
        weights = mixing_weights(orchestrator, jnp.zeros((), bool), EMERGENCY_KERNEL)
        components, draws = mixture_components(weights, means, step.spreads, step.kernel_draws,
                                               step.normal_draws, meta.params.temperatures, config)
        score = mixture_crps(components, draws, target)
        if learn:
            _, meta, _ = update_meta(meta, step, config, optimizer, EMERGENCY_KERNEL)
        _, new_orchestrator = update_orchestrator(
            orchestrator, means, target, alarm=jnp.zeros((), bool), emergency=jnp.zeros((), bool),
            config=config.orchestrator, step_size=meta.params.step_size, epsilon=meta.params.epsilon,
        )
        meta = remember(meta, orchestrator, means, jnp.zeros((), bool), jnp.ones((), bool))
        return (meta, new_orchestrator, target), score

    carry = (init_meta(params, optimizer), init_orchestrator(K), jnp.zeros(()))
    (meta, _, _), scores = jax.lax.scan(jax.jit(body), carry, (noise, jnp.arange(steps)))
    return np.asarray(scores), meta.params


@pytest.mark.slow  # compiles ott's implicit backward pass: 30-50 s on a loaded 2-core VM
def test_online_learning_leaves_bad_initial_values_and_lowers_the_crps(key):
    config = PredictorConfig(drift=1.0, gaussian_share=0.0, unit_spread=False, meta_learning_rate=0.05)
    # Too small a step (the weights barely leave uniform) and too hot kernels (3x the noise).
    bad = MetaParams(jnp.log(jnp.asarray(0.1)), jnp.log(jnp.asarray(0.01)), jnp.full((K,), jnp.log(3.0)))
    fixed, _ = _simulate(config, bad, False, key)
    learned, params = _simulate(config, bad, True, key)
    assert float(params.step_size) > 0.02  # moved up from 0.01: the weights find kernel 0
    assert float(params.temperatures[0]) < 1.5  # the right kernel cooled down from 3
    # Same noise, same draws: the learner's last half is clearly better than the fixed values'.
    late = slice(150, None)
    assert learned[late].mean() < 0.85 * fixed[late].mean()


@pytest.mark.slow
def test_predictor_with_meta_learning_learns_and_forecasts(key):
    config = PredictorConfig(meta_learning=True, gaussian_share=0.0, meta_learning_rate=0.05, warmup=32)
    rng = np.random.default_rng(3)
    values = 100.0 + np.cumsum(rng.standard_normal(120))
    state = init_predictor(config, float(values[0]), key=key)
    start = state.meta.params
    step = jax.jit(lambda s, v: update_predictor(s, v, config))
    for value in values[1:]:
        out, state = step(state, value)
    assert np.all(np.isfinite(np.asarray(out.samples)))
    moved = jax.flatten_util.ravel_pytree(state.meta.params)[0] - jax.flatten_util.ravel_pytree(start)[0]
    assert float(jnp.max(jnp.abs(moved))) > 0.05  # ~90 scored steps of Adam at 0.05
    # A missing observation changes nothing of the learner.
    _, after_gap = step(state, np.nan)
    np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(after_gap.meta)[0],
                                  jax.flatten_util.ravel_pytree(state.meta)[0])
    assert PredictorConfig().meta_learning is False and init_predictor(PredictorConfig(), 1.0, key=key).meta is None
