"""FeatureMamba and the multitask loss: causality, segment continuation, the scan reference,
ordered quantiles, and Kendall et al.'s uncertainty weighting against its closed-form optimum."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import FeatureMamba, MultitaskConfig, MultitaskOutput, multitask_loss, uncertainty_weighted

from ._helpers import max_error, perturb

PURE = MultitaskConfig(n_features=5, d_model=16, n_layers=2, d_state=8, head_dim=8, chunk_size=8)
HYBRID = PURE.replace(n_layers=2, attention_every=2, attention_heads=2, attention_kv_heads=1, attention_window=6)


@eqx.filter_jit
def forward(model, x, state=None, reference=False):
    return model(x, state=state, reference=reference)


def features(rows=24, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(rows, 5)), jnp.float32)


@pytest.fixture(scope="module", params=[PURE, HYBRID], ids=["mamba", "hybrid"])
def model(request):
    return perturb(FeatureMamba(request.param, key=jax.random.key(1)), seed=2)


def test_outputs_at_t_read_rows_up_to_t_only_and_quantiles_never_cross(model):
    x = features()
    out, state = forward(model, x)
    assert state is None
    assert out.direction_logits.shape == (24, 3) and out.quantiles.shape == (24, 2) and out.vol.shape == (24,)
    t = 13
    changed = x.at[t + 1 :].set(5 * np.random.default_rng(5).normal(size=(x.shape[0] - t - 1, 5)))
    out2, _ = forward(model, changed)
    for a, b in zip(out, out2):
        np.testing.assert_allclose(np.asarray(a)[: t + 1], np.asarray(b)[: t + 1], rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(a)[t + 1 :], np.asarray(b)[t + 1 :])
    for output in (out, out2):
        assert np.all(np.asarray(output.quantiles[:, 0]) < np.asarray(output.quantiles[:, 1]))


def test_segments_with_carried_state_equal_one_pass(model):
    x = features(rows=24)
    whole, _ = forward(model, x)
    state = model.init_state()
    pieces = []
    for start in range(0, 24, 8):  # the hybrid's attention window (6) spans segment edges
        out, state = forward(model, x[start : start + 8], state)
        pieces.append(out)
    joined = MultitaskOutput(*(jnp.concatenate(parts) for parts in zip(*pieces)))
    assert max_error(joined, whole) < 1e-5


def test_chunked_scan_matches_the_literal_scan_and_initial_quantiles():
    fresh = FeatureMamba(PURE, key=jax.random.key(3))
    # Untrained, the spreads sit at the standard normal's 10% and 90% points around the centre.
    out, _ = forward(fresh, jnp.zeros((24, 5)))
    np.testing.assert_allclose(np.asarray(out.quantiles), [[-1.2816, 1.2816]] * 24, atol=0.05)
    net = perturb(fresh, seed=4)
    x = features(rows=24, seed=6)  # chunks of 8 and a scan over them, against one step at a time
    assert max_error(forward(net, x)[0], forward(net, x, reference=True)[0]) < 1e-5


def test_uncertainty_weighting_formula_and_its_optimum():
    ce, reg = jnp.float32(0.9), jnp.float32(2.5)
    s = jnp.asarray([0.3, -0.2])
    expected = np.exp(-0.3) * 0.9 + 0.15 + 0.5 * np.exp(0.2) * 2.5 - 0.1
    assert np.isclose(float(uncertainty_weighted(ce, reg, s)), expected, rtol=1e-6)
    # Minimised over s alone: s_dir = ln(2 L_dir), s_reg = ln(L_reg) (Kendall et al. 2018, eq. 10).
    optimum = jnp.asarray([np.log(2 * 0.9), np.log(2.5)], jnp.float32)
    value_and_grad = jax.value_and_grad(lambda s: uncertainty_weighted(ce, reg, s))
    best, grad = value_and_grad(optimum)
    np.testing.assert_allclose(np.asarray(grad), [0.0, 0.0], atol=1e-6)
    for step in ([0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]):
        assert float(value_and_grad(optimum + jnp.asarray(step))[0]) > float(best)


def test_loss_matches_numpy_on_masked_rows_and_ignores_the_rest():
    rng = np.random.default_rng(0)
    n = 12
    logits = rng.normal(size=(n, 3))
    low = rng.normal(size=n) - 1
    high = low + rng.uniform(0.1, 2, n)
    vol = rng.normal(size=n)
    output = MultitaskOutput(jnp.asarray(logits), jnp.asarray(np.stack([low, high], -1)), jnp.asarray(vol))
    direction = rng.integers(0, 3, n)
    y, v = rng.normal(size=n), rng.normal(size=n)
    mask = rng.uniform(size=n) < 0.6
    y_bad, v_bad = np.where(mask, y, np.nan), np.where(mask, v, np.nan)  # NaN where masked
    log_vars = jnp.asarray([0.1, -0.3])
    loss, parts = multitask_loss(output, jnp.asarray(direction), jnp.asarray(y_bad), jnp.asarray(v_bad),
                                 jnp.asarray(mask), log_vars)
    m = mask
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -log_p[np.arange(n), direction][m].mean()

    def pin(q, level):
        e = y[m] - q[m]
        return np.maximum(level * e, (level - 1) * e).mean()

    reg = pin(low, 0.1) + pin(high, 0.9) + ((vol - v)[m] ** 2).mean()
    assert np.isclose(float(parts["ce"]), ce, rtol=1e-5)
    assert np.isclose(float(parts["pinball_10"]) + float(parts["pinball_90"]) + float(parts["vol_mse"]), reg, rtol=1e-5)
    assert np.isclose(float(loss), np.exp(-0.1) * ce + 0.05 + 0.5 * np.exp(0.3) * reg - 0.15, rtol=1e-5)
    assert np.isfinite(float(loss))


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="head_dim"):
        MultitaskConfig(d_model=16, head_dim=7)
    with pytest.raises(ValueError, match="n_features"):
        MultitaskConfig(n_features=0)
