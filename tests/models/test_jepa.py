"""JEPA: VICReg terms against numpy, EMA, block masks (no hidden step reaches the context), the
causal window normalisation, the window-level VICReg terms, the loss; the predictor zoo (transformer,
MLP, KAN) and the Barlow Twins and cross-resolution terms in the loss."""

import dataclasses
import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import (
    JEPA,
    PREDICTORS,
    AbstractJEPAPredictor,
    JEPAConfig,
    JEPAPredictor,
    KANLayer,
    StepwisePredictor,
    block_masks,
    causal_window_norm,
    ema_post_update,
    ema_update,
    jepa_loss,
    vicreg_covariance,
    vicreg_invariance,
    vicreg_variance,
)
from chaosfm.train import TrainConfig, serialise, train
from tests.models._helpers import perturb
from tests.models.test_ssl_losses import _numpy_barlow

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


def _numpy_window_norm(x, eps=1e-2):
    """Slow reference: step t standardised by the mean and (biased) variance of rows 0..t."""
    out, scale = np.zeros_like(x), np.zeros_like(x)
    for t in range(len(x)):
        var = x[: t + 1].var(axis=0)
        out[t] = (x[t] - x[: t + 1].mean(axis=0)) / np.sqrt(var + eps)
        scale[t] = 0.5 * np.log(var + eps)
    return out, scale


def test_causal_window_norm_matches_numpy_and_removes_the_level():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)) * np.array([1.0, 2.0, 1.5]) + np.array([3.0, -1.0, 0.0])
    normalised, log_scale = causal_window_norm(jnp.asarray(x))
    want, want_scale = _numpy_window_norm(x)
    np.testing.assert_allclose(np.asarray(normalised), want, atol=2e-5)
    np.testing.assert_allclose(np.asarray(log_scale), want_scale, atol=2e-5)
    # Causal: rows after t do not move step t.
    changed, _ = causal_window_norm(jnp.asarray(x).at[25:].set(50.0))
    np.testing.assert_array_equal(np.asarray(changed)[:25], np.asarray(normalised)[:25])
    # A calmer or wilder regime, a * x + b, reads the same once the window has a few rows (eps is
    # small against the variance); only the log scale moves, by log(a).
    a, b = np.array([0.5, 3.0, 1.5]), np.array([1.0, 2.0, -3.0])
    calm, calm_scale = causal_window_norm(jnp.asarray(a * x + b))
    np.testing.assert_allclose(np.asarray(calm)[10:], np.asarray(normalised)[10:], rtol=0.05, atol=0.01)
    np.testing.assert_allclose((np.asarray(calm_scale) - np.asarray(log_scale))[-1], np.log(a), atol=0.03)


def test_window_norm_encoder_reads_a_rescaled_window_alike(key):
    """Without the log-scale inputs, the encoder cannot tell a window from the same window at another
    volatility; with them (the default) it can. Both stay causal step by step."""
    x = jax.random.normal(jax.random.key(1), (16, 3)) * 2.0
    calm = 0.4 * x + 0.1
    plain = perturb(JEPA(JEPAConfig(**TINY, window_scale=False), key=key))
    scaled = perturb(JEPA(JEPAConfig(**TINY), key=key))
    old = perturb(JEPA(JEPAConfig(**TINY, window_norm=False), key=key))
    assert scaled.encoder.w_in.shape == (6, 16) and plain.encoder.w_in.shape == (3, 16)
    np.testing.assert_allclose(np.asarray(plain.embed(calm))[-1], np.asarray(plain.embed(x))[-1], atol=0.02)
    assert not np.allclose(np.asarray(scaled.embed(calm))[-1], np.asarray(scaled.embed(x))[-1], atol=0.05)
    assert not np.allclose(np.asarray(old.embed(calm))[-1], np.asarray(old.embed(x))[-1], atol=0.05)
    later = x.at[10:].set(30.0)
    for model in (plain, scaled):
        np.testing.assert_allclose(np.asarray(model.embed(later))[:10], np.asarray(model.embed(x))[:10], atol=1e-6)


def test_window_terms_add_vicreg_on_the_last_visible_step(key):
    """With window_terms the loss gains the variance hinge and covariance of one embedding per window
    (the context embedding at cut - 1) across the batch, recomputed here from the masks."""
    on = JEPAConfig(**TINY, variance_target=4.0)  # a high target keeps every hinge active
    model_on = perturb(JEPA(on, key=key))
    model_off = perturb(JEPA(on.replace(window_terms=False), key=key))  # the same weights
    features = jax.random.normal(jax.random.key(1), (6, 16, 3))
    loss_key = jax.random.key(7)
    loss = eqx.filter_jit(lambda model: jepa_loss(model, {"features": features}, loss_key)[0])
    with_terms, without = loss(model_on), loss(model_off)
    mask_key, _ = jax.random.split(loss_key)
    masks = jax.vmap(
        lambda k: block_masks(k, 16, n_blocks=on.n_blocks, min_span=2, max_span=4, min_future=4, max_future=8)
    )(jax.random.split(mask_key, 6))
    encode = eqx.filter_jit(lambda encoder, windows: jax.vmap(encoder)(windows))
    context = encode(model_on.encoder, features * masks.context[:, :, None])
    last = context[jnp.arange(6), masks.cut - 1]
    extra = on.variance_weight * vicreg_variance(last, on.variance_std) + on.covariance_weight * vicreg_covariance(last)
    assert float(with_terms - without) == pytest.approx(float(extra), rel=1e-3)


def test_code_encoder_hides_steps_with_its_own_token(key):
    config = JEPAConfig(**{**TINY, "vocab_size": 11})
    model = perturb(JEPA(config, key=key))
    assert model.encoder.w_in is None and model.encoder.embedding.shape == (12, 16)  # + the hidden code
    masks = block_masks(jax.random.key(3), 16, n_blocks=2, min_span=2, max_span=4, min_future=4, max_future=8)
    cut = int(masks.cut)
    x = jax.random.randint(jax.random.key(1), (16,), 0, 11)
    y = x.at[cut:].set((x[cut:] + 5) % 11)
    hidden_x, hidden_y = model.encoder.hide(x, masks.context), model.encoder.hide(y, masks.context)
    np.testing.assert_array_equal(np.asarray(hidden_x)[cut:], 11)
    np.testing.assert_array_equal(np.asarray(hidden_x), np.asarray(hidden_y))
    np.testing.assert_array_equal(np.asarray(hidden_x)[:cut], np.asarray(x)[:cut])
    # The target encoder reads the real codes: different futures give different targets.
    assert not np.allclose(np.asarray(model.target_encoder(x))[cut:], np.asarray(model.target_encoder(y))[cut:])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(model.encoder(x)), axis=-1), 1.0, atol=1e-5)
    codes = jax.random.randint(jax.random.key(4), (4, 16), 0, 11)
    # One compiled program for the loss and its gradient (op by op, the gradient took a minute).
    (loss, metrics), grads = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda m: jepa_loss(m, {"codes": codes}, jax.random.key(5)), has_aux=True))(model)
    assert np.isfinite(float(loss)) and float(jnp.abs(grads.encoder.embedding).sum()) > 0
    with pytest.raises(ValueError, match="vocab_size"):
        JEPAConfig(**{**TINY, "vocab_size": -1})


# --- the predictor zoo and the losses beside VICReg ----------------------------------------------

PREDICTOR_CASES = [("transformer", "bspline"), ("mlp", "bspline"), ("kan", "bspline"), ("kan", "rbf")]


@pytest.mark.parametrize("predictor, basis", PREDICTOR_CASES)
def test_every_predictor_is_narrow_causal_and_blind_to_hidden_steps(key, predictor, basis):
    config = JEPAConfig(**TINY, predictor=predictor, kan_basis=basis)
    model = perturb(JEPA(config, key=key))
    assert isinstance(model.predictor, AbstractJEPAPredictor)
    # d_embed -> d_pred -> d_embed
    assert model.predictor.w_in.shape == (8, 8) and model.predictor.w_out.shape == (8, 8)
    cut = 10
    visible = jnp.arange(16) < cut
    context = jax.random.normal(jax.random.key(1), (16, 8))
    hidden_changed = context.at[cut:].set(50.0)
    later_changed = context.at[6:].set(-7.0)  # visible steps 6.. and everything after
    predict = eqx.filter_jit(lambda m, c: m.predictor(c, visible))
    base = np.asarray(predict(model, context))
    np.testing.assert_array_equal(np.asarray(predict(model, hidden_changed)), base)
    np.testing.assert_allclose(np.asarray(predict(model, later_changed))[:6], base[:6], atol=1e-6)
    # It does read the context.
    assert not np.allclose(np.asarray(predict(model, later_changed))[cut:], base[cut:], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(base, axis=-1), 1.0, atol=1e-5)
    assert len({tuple(np.round(row, 5)) for row in base[cut:]}) > 1  # hidden steps are told apart


def test_kan_predictor_blocks_and_the_registry(key):
    model = JEPA(JEPAConfig(**TINY, predictor="kan", kan_basis="rbf", kan_grid=4, pred_layers=2), key=key)
    assert isinstance(model.predictor, StepwisePredictor)
    assert [type(b) for b in model.predictor.blocks] == [KANLayer, KANLayer]
    assert model.predictor.blocks[0].coef.shape == (8, 8, 5)  # 4 intervals: 5 RBF centres
    assert set(PREDICTORS) == {"transformer", "mlp", "kan"}
    assert isinstance(JEPA(JEPAConfig(**TINY), key=key).predictor, JEPAPredictor)  # the default is unchanged


def test_a_saved_config_without_the_new_keys_reads_as_before(key):
    """A model_config.json written before the predictor and loss options existed: the transformer
    predictor and no extra loss terms, and the weights of such a run restore leaf for leaf."""
    config = JEPAConfig(**TINY)
    new_keys = {"predictor", "kan_basis", "kan_grid", "kan_order", "kan_radius", "barlow_weight", "barlow_lambda",
                "cross_resolution_weight"}
    old = {k: v for k, v in dataclasses.asdict(config).items() if k not in new_keys}
    loaded = JEPAConfig(**old)
    assert loaded == config and loaded.predictor == "transformer" and loaded.barlow_weight == 0.0
    saved = perturb(JEPA(config, key=key))
    buffer = io.BytesIO(serialise(saved))
    restored = eqx.tree_deserialise_leaves(buffer, JEPA(loaded, key=jax.random.key(9)))
    for got, want in zip(jax.tree_util.tree_leaves(restored.predictor), jax.tree_util.tree_leaves(saved.predictor)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # model.eqx holds leaves in field order: the transformer predictor keeps the layout runs were saved with.
    assert isinstance(restored.predictor, JEPAPredictor)
    assert [f.name for f in dataclasses.fields(JEPAPredictor)] == ["w_in", "mask_token", "blocks", "w_out"]


def test_new_config_rules_name_the_key():
    with pytest.raises(ValueError, match="predictor: unknown 'cnn'"):
        JEPAConfig(**TINY, predictor="cnn")
    with pytest.raises(ValueError, match="kan_basis"):
        JEPAConfig(**TINY, kan_basis="fourier")
    with pytest.raises(ValueError, match="barlow_weight"):
        JEPAConfig(**TINY, barlow_weight=-1.0)
    with pytest.raises(ValueError, match="cross_resolution_weight: must be 0 with vocab_size"):
        JEPAConfig(**{**TINY, "vocab_size": 5}, cross_resolution_weight=1.0)
    # The head rule binds the transformer only.
    odd = {**TINY, "d_pred": 6, "pred_heads": 4}
    with pytest.raises(ValueError, match="pred_heads"):
        JEPAConfig(**odd)
    assert JEPAConfig(**odd, predictor="mlp").d_pred == 6


@pytest.mark.slow  # ~35 s wall on a busy 2-core machine (the Mamba encoder compiles twice)
def test_barlow_and_cross_resolution_terms_join_the_loss(key):
    """Switching the terms on adds barlow_weight x Barlow Twins of (predictions, targets) on the
    target steps and cross_resolution_weight x the pooled-embedding gap of the half-rate window,
    both recomputed here in numpy from the model's own views."""
    on = JEPAConfig(**TINY, predictor="kan", barlow_weight=0.3, barlow_lambda=0.05, cross_resolution_weight=2.0)
    model_on = perturb(JEPA(on, key=key))
    features = jax.random.normal(jax.random.key(1), (6, 16, 3))
    loss_key = jax.random.key(7)
    with_terms, metrics = eqx.filter_jit(lambda m: jepa_loss(m, {"features": features}, loss_key))(model_on)
    vicreg = sum(getattr(on, f"{term}_weight") * metrics[term] for term in ("invariance", "variance", "covariance"))
    mask_key, _ = jax.random.split(loss_key)
    masks = jax.vmap(
        lambda k: block_masks(k, 16, n_blocks=on.n_blocks, min_span=2, max_span=4, min_future=4, max_future=8)
    )(jax.random.split(mask_key, 6))

    x = np.asarray(features, np.float64)
    half = jnp.asarray((x[:, 0::2] + x[:, 1::2]) / 2, jnp.float32)  # (6, 8, 3): pairs (0, 1), ... end at step 15

    @eqx.filter_jit
    def views(model):
        context = jax.vmap(model.encoder)(features * masks.context[:, :, None])
        predicted = jax.vmap(model.predictor)(context, masks.context)
        return predicted, jax.vmap(model.target_encoder)(features), jax.vmap(model.encoder)(half)

    predicted, target, coarse = (np.asarray(v, np.float64) for v in views(model_on))
    keep = np.asarray(jnp.any(masks.targets, axis=1)).reshape(-1)
    barlow = _numpy_barlow(predicted.reshape(-1, 8)[keep], target.reshape(-1, 8)[keep], 0.05)
    pool = lambda e: e.mean(axis=1) / np.linalg.norm(e.mean(axis=1), axis=-1, keepdims=True)  # noqa: E731
    cross = np.mean(np.sum((pool(coarse) - pool(target)) ** 2, axis=-1))
    assert float(metrics["barlow"]) == pytest.approx(barlow, rel=1e-3)
    assert float(metrics["cross_resolution"]) == pytest.approx(cross, rel=1e-3, abs=1e-6)
    assert float(with_terms - vicreg) == pytest.approx(0.3 * barlow + 2.0 * cross, rel=1e-3)


EVERY_OPTION = dict(
    TINY, n_layers=3, trapezoidal=True, complex_phase=True, bc_norm=True, attention_every=3, attention_heads=2,
    attention_kv_heads=1, exo_clock=True, exo_column=1, session="weekdays", clock_unit=86_400.0,
)


@pytest.mark.slow  # ~20 s on a busy 2-core machine: a three-layer hybrid compiles forward and backward
def test_the_encoder_takes_every_sequence_model_option(key):
    from chaosfm.models import Mamba2Mixer
    from chaosfm.models._gpt import Block

    config = JEPAConfig(**EVERY_OPTION)
    model = perturb(JEPA(config, key=key))
    encoder = model.encoder
    # The code models' own layers: two Mamba-3 mixers with both clocks and BC normalisation, then attention.
    assert [type(layer) for layer in encoder.layers] == [Mamba2Mixer, Mamba2Mixer, Block]
    mixer = encoder.layers[0]
    assert mixer.trapezoidal and mixer.complex_phase and mixer.b_gain is not None and mixer.clock_gain is not None
    assert config.input_width == 4 and encoder.clocked and encoder.exo_column == 1
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((16, 3)), np.ones((16, 1))], axis=1).astype(np.float32)
    embed = eqx.filter_jit(lambda m, x: m.encoder(x))
    base = np.asarray(embed(model, jnp.asarray(x)))
    # Causal: changing step 9 onwards (features and clock) leaves steps 0-8 as they were.
    later = x.copy()
    later[9:] = rng.standard_normal((7, 4))
    changed = np.asarray(embed(model, jnp.asarray(later)))
    np.testing.assert_allclose(changed[:9], base[:9], atol=1e-6)
    assert not np.allclose(changed[9:], base[9:])
    # Both clocks reach the output: the volatility column (beyond its place among the features) and the session clock.
    for column in (1, 3):
        moved = x.copy()
        moved[4, column] = 0.0 if column == 3 else moved[4, column] + 1.0
        assert not np.allclose(np.asarray(embed(model, jnp.asarray(moved)))[4:], base[4:])
    # It trains: the loss has finite gradients in every part, the clock gains and BC gains included.
    batch = np.concatenate([rng.standard_normal((4, 16, 3)), np.ones((4, 16, 1))], axis=2).astype(np.float32)
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jepa_loss(m, {"features": jnp.asarray(batch)}, jax.random.key(1))[0]))(model)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)
    assert np.any(np.asarray(grads.encoder.layers[0].b_gain) != 0)
    assert np.any(np.asarray(grads.encoder.layers[0].clock_gain) != 0)


def test_encoder_option_rules_name_the_key():
    with pytest.raises(ValueError, match="exo_clock: and session need feature inputs"):
        JEPAConfig(**{**TINY, "vocab_size": 5}, session="weekdays")
    with pytest.raises(ValueError, match="exo_column: must name one of the 3 feature columns"):
        JEPAConfig(**TINY, exo_clock=True)
    with pytest.raises(ValueError, match="session: 'monday' is not one of"):
        JEPAConfig(**TINY, session="monday")
    with pytest.raises(ValueError, match="attention_heads"):
        JEPAConfig(**TINY, attention_every=1, attention_heads=3)
