"""JEPA: VICReg terms against numpy, EMA, block masks (no hidden step reaches the context), the loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import (
    JEPA,
    JEPAConfig,
    block_masks,
    ema_post_update,
    ema_update,
    jepa_loss,
    vicreg_covariance,
    vicreg_invariance,
    vicreg_variance,
)
from chaosfm.train import TrainConfig, train
from tests.models._helpers import perturb

TINY = dict(
    n_features=3, context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
    pred_heads=2, min_span=2, max_span=4, min_future=4, max_future=8,
)


def test_vicreg_terms_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 6)) * np.array([0.01, 0.5, 1, 2, 0.05, 1])
    z2 = z + 0.1 * rng.standard_normal(z.shape)
    std = z.std(axis=0, ddof=1)
    cov = np.cov(z.T)
    assert float(vicreg_variance(jnp.asarray(z), 0.3, eps=0.0)) == pytest.approx(np.mean(np.maximum(0, 0.3 - std)), rel=1e-4)
    off = cov - np.diag(np.diag(cov))
    assert float(vicreg_covariance(jnp.asarray(z))) == pytest.approx(np.sum(off**2) / 6, rel=1e-4)
    assert float(vicreg_invariance(jnp.asarray(z), jnp.asarray(z2))) == pytest.approx(
        np.mean(np.sum((z - z2) ** 2, axis=1)), rel=1e-4
    )
    # Weights 0/1 are the same as keeping the rows with weight 1.
    w = (rng.random(50) > 0.4).astype(np.float32)
    keep = w > 0
    assert float(vicreg_covariance(jnp.asarray(z), jnp.asarray(w))) == pytest.approx(
        float(vicreg_covariance(jnp.asarray(z[keep]))), rel=1e-4
    )
    assert float(vicreg_variance(jnp.asarray(z), 0.3, jnp.asarray(w))) == pytest.approx(
        float(vicreg_variance(jnp.asarray(z[keep]), 0.3)), rel=1e-4
    )
    # Covariance is accumulated in float32 even for bfloat16 embeddings.
    assert vicreg_covariance(jnp.asarray(z, jnp.bfloat16)).dtype == jnp.float32


def test_ema_update_closed_form():
    target = {"w": jnp.ones((2, 2)), "n": 3}
    online = {"w": jnp.zeros((2, 2)), "n": 5}
    out = ema_update(target, online, 0.9)
    np.testing.assert_allclose(np.asarray(out["w"]), 0.9)
    assert out["n"] == 3  # non-arrays come from the target


def test_block_masks_targets_after_the_cut():
    keys = jax.random.split(jax.random.key(0), 200)
    masks = jax.vmap(
        lambda k: block_masks(k, 32, n_blocks=3, min_span=2, max_span=6, min_future=8, max_future=12)
    )(keys)
    cuts = np.asarray(masks.cut)
    assert set(cuts) == set(range(20, 25))  # every cut in [L - max_future, L - min_future] occurs
    for cut, context, targets in zip(cuts, np.asarray(masks.context), np.asarray(masks.targets)):
        assert context[:cut].all() and not context[cut:].any()
        for span in targets:
            steps = np.flatnonzero(span)
            assert 2 <= steps.size <= 6 and steps.min() >= cut and steps.max() < 32
            assert np.all(np.diff(steps) == 1)  # one contiguous block


def test_hidden_steps_do_not_reach_context_or_predictor(key):
    config = JEPAConfig(**TINY)
    model = perturb(JEPA(config, key=key))
    masks = block_masks(jax.random.key(3), 16, n_blocks=2, min_span=2, max_span=4, min_future=4, max_future=8)
    cut = int(masks.cut)
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = x.at[cut:].set(100.0 * jax.random.normal(jax.random.key(2), (16 - cut, 3)))

    @eqx.filter_jit
    def views(model, features):
        context = model.encoder(features * masks.context[:, None].astype(features.dtype))
        return context, model.predictor(context, masks.context), model.target_encoder(features)

    (cx, px, tx), (cy, py, ty) = views(model, x), views(model, y)
    np.testing.assert_array_equal(np.asarray(cx), np.asarray(cy))
    np.testing.assert_array_equal(np.asarray(px), np.asarray(py))
    # The target encoder does see them (a sanity check that the test can fail).
    assert not np.allclose(np.asarray(tx)[cut:], np.asarray(ty)[cut:])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(cx)[:cut], axis=-1), 1.0, atol=1e-5)


def test_config_rules():
    with pytest.raises(ValueError, match="d_pred"):
        JEPAConfig(**{**TINY, "d_pred": 16})
    with pytest.raises(ValueError, match="cfm_weight"):
        JEPAConfig(**{**TINY, "cfm_weight": -1.0})


def test_train_step_moves_online_weights_and_applies_the_ema(tmp_path, key):
    """One step of the project's loop: every online part (encoder with depth attention, predictor,
    flow head) moves; the target encoder is exactly the EMA of the old target and the new encoder."""
    config = JEPAConfig(**TINY, ema_decay=0.8, cfm_weight=1.0, cfm_horizon=3, depth_attention=True)
    model = perturb(JEPA(config, key=key))
    batch = {"features": np.asarray(jax.random.normal(jax.random.key(1), (6, 16, 3)))}
    loop = TrainConfig(steps=1, batch_size=6, warmup_steps=0, learning_rate=1e-2, checkpoint_every=1)
    result = train(model, jepa_loss, lambda step: batch, loop, tmp_path, post_update=ema_post_update(0.8))
    trained = result.model
    assert {"invariance", "variance", "covariance", "cfm"} <= set(result.history[-1])

    def leaves(tree):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]

    for part in ("encoder", "predictor", "flow"):
        before, after = leaves(getattr(model, part)), leaves(getattr(trained, part))
        assert any(not np.allclose(a, b) for a, b in zip(after, before)), part
    expected = ema_update(model.target_encoder, trained.encoder, 0.8)
    for got, want in zip(leaves(trained.target_encoder), leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
