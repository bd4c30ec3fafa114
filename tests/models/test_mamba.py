"""Mamba-2 and its options: the chunked path against the literal recurrence, values and gradients.

Option combinations: Euler or trapezoidal (Mamba-3) discretisation, real or rotating (complex,
Mamba-3) state, with and without the exo-clock, pure or hybrid with attention layers.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import (
    Mamba,
    MambaConfig,
    count_params,
    selective_scan,
    selective_scan_reference,
)

from ._helpers import max_error, perturb


def _scan_inputs(key, time=29, heads=2, head_dim=3, state=6):
    k = jax.random.split(key, 7)
    return {
        "x": jax.random.normal(k[0], (time, heads, head_dim)),
        "dt": jax.nn.softplus(jax.random.normal(k[1], (time, heads))),
        "a": -jnp.exp(jax.random.normal(k[2], (heads,))),
        "b": jax.random.normal(k[3], (time, state)),
        "c": jax.random.normal(k[4], (time, state)),
        "lam": jax.nn.sigmoid(jax.random.normal(k[5], (time, heads))),
        "theta": jax.random.normal(k[6], (time, state // 2)),
    }


_COMBINATIONS = [
    pytest.param(False, False, id="euler-real"),
    pytest.param(True, True, id="trapezoid-complex"),
    pytest.param(True, False, id="trapezoid-real", marks=pytest.mark.slow),
    pytest.param(False, True, id="euler-complex", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("trapezoidal, complex_phase", _COMBINATIONS)
def test_selective_scan_matches_literal_recurrence(key, trapezoidal, complex_phase):
    inputs = _scan_inputs(key)
    if not trapezoidal:
        inputs["lam"] = None
    if not complex_phase:
        inputs["theta"] = None
    split = 12  # a second segment continues from the first one's carry

    def segmented(scan, inputs):
        first = {k: (None if v is None else (v if k == "a" else v[:split])) for k, v in inputs.items()}
        second = {k: (None if v is None else (v if k == "a" else v[split:])) for k, v in inputs.items()}
        y1, carry = scan(**first, chunk_size=5)
        y2, carry = scan(**second, carry=carry, chunk_size=5)
        return jnp.concatenate([y1, y2]), carry

    def loss(scan, inputs):
        y, carry = scan(**inputs, chunk_size=5)
        weights = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return jnp.sum(weights * y) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(carry))

    @jax.jit
    def both(inputs):
        fast = segmented(selective_scan, inputs), jax.grad(lambda i: loss(selective_scan, i))(inputs)
        slow = (
            segmented(selective_scan_reference, inputs),
            jax.grad(lambda i: loss(selective_scan_reference, i))(inputs),
        )
        return fast, slow

    (outputs, grads), (outputs_ref, grads_ref) = both(inputs)
    assert max_error(outputs, outputs_ref) <= 1e-5
    assert max_error(grads, grads_ref) <= 1e-5


def test_trapezoid_with_lambda_one_is_the_euler_rule(key):
    inputs = _scan_inputs(key)
    euler = {**inputs, "lam": None, "theta": None}
    trapezoid = {**inputs, "lam": jnp.ones_like(inputs["lam"]), "theta": None}
    run = jax.jit(lambda i: selective_scan(**i, chunk_size=8)[0])
    assert max_error(run(trapezoid), run(euler)) <= 1e-6


CONFIG = MambaConfig(
    vocab_size=9, context_length=16, d_model=16, n_layers=2, d_state=4, head_dim=8, chunk_size=4
)
EVERYTHING = CONFIG.replace(
    exo_clock=True,
    trapezoidal=True,
    complex_phase=True,
    bc_norm=True,
    gated_mlp=True,
    attention_every=2,
    attention_heads=2,
    attention_kv_heads=1,
    n_layers=2,  # a mixer, then an attention block
)


def _codes_and_exo(n, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 9, n), jnp.int32), jnp.asarray(rng.standard_normal(n), jnp.float32)


@pytest.mark.parametrize(
    "config",
    [pytest.param(CONFIG, id="plain", marks=pytest.mark.slow), pytest.param(EVERYTHING, id="all-options")],
)
def test_model_chunked_path_matches_reference_in_logits_and_parameter_gradients(config):
    model = perturb(Mamba(config, key=jax.random.key(0)))
    codes, exo = _codes_and_exo(13)
    exo = exo if config.exo_clock else None

    def loss(model, reference):
        logits, _ = model(codes, exo=exo, reference=reference)
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(13), codes]), logits

    @eqx.filter_jit
    def both(model):
        fast = eqx.filter_grad(lambda m: loss(m, False), has_aux=True)(model)
        slow = eqx.filter_grad(lambda m: loss(m, True), has_aux=True)(model)
        return fast, slow

    (grads, logits), (grads_ref, logits_ref) = both(model)
    assert max_error(logits, logits_ref) <= 1e-5
    assert max_error(grads, grads_ref) <= 1e-5


def test_streaming_in_segments_matches_one_call():
    model = perturb(Mamba(EVERYTHING, key=jax.random.key(1)))
    codes, exo = _codes_and_exo(30, seed=1)

    @eqx.filter_jit
    def both(model):
        def piece(state, inputs):
            logits, state = model(inputs[0], state=state, exo=inputs[1])
            return state, logits

        _, pieces = jax.lax.scan(piece, model.init_state(), (codes.reshape(6, 5), exo.reshape(6, 5)))
        return model(codes, exo=exo)[0], pieces.reshape(30, -1)

    whole, streamed = both(model)
    assert max_error(streamed, whole) <= 1e-5


def test_mamba_is_causal():
    model = perturb(Mamba(EVERYTHING, key=jax.random.key(2)))
    codes, exo = _codes_and_exo(12, seed=2)
    changed_codes = codes.at[7].set((codes[7] + 1) % 9)
    changed_exo = exo.at[9].add(1.0)
    run = eqx.filter_jit(lambda m, c, e: m(c, exo=e)[0])
    base = run(model, codes, exo)
    after_code, after_exo = run(model, changed_codes, exo), run(model, codes, changed_exo)
    np.testing.assert_allclose(after_code[:7], base[:7], atol=1e-6)
    assert np.max(np.abs(after_code[7:] - base[7:])) > 1e-4
    np.testing.assert_allclose(after_exo[:9], base[:9], atol=1e-6)
    assert np.max(np.abs(after_exo[9:] - base[9:])) > 1e-5


def test_exo_clock_at_zero_is_plain_mamba_and_volatility_changes_the_clock():
    # Same key, same draws: the two models differ only by the clock gains.
    clocked = perturb(Mamba(CONFIG.replace(exo_clock=True), key=jax.random.key(3)))
    plain = perturb(Mamba(CONFIG, key=jax.random.key(3)))
    assert max_error(clocked.layers[0].w_in, plain.layers[0].w_in) == 0.0
    codes, exo = _codes_and_exo(10, seed=3)

    @eqx.filter_jit
    def outputs(clocked, plain):
        return clocked(codes, exo=jnp.zeros(10))[0], plain(codes)[0], clocked(codes, exo=exo)[0]

    calm, reference, volatile = outputs(clocked, plain)
    assert max_error(calm, reference) <= 1e-6
    assert np.max(np.abs(volatile - reference)) > 1e-4
    with pytest.raises(ValueError, match="exo"):
        clocked(codes)
    with pytest.raises(ValueError, match="exo"):
        plain(codes, exo=exo)


_GAPS = np.array([5, 6, 13, 20])  # rows inside a market closure: clock 0


@pytest.mark.parametrize("trapezoidal, complex_phase", [(False, False), (True, True)])
def test_a_closed_row_passes_the_state_as_if_it_were_not_there(key, trapezoidal, complex_phase):
    inputs = _scan_inputs(key)
    time = inputs["x"].shape[0]
    open_rows = np.setdiff1d(np.arange(time), _GAPS)
    inputs["dt"] = inputs["dt"].at[_GAPS].set(0.0)  # what a clock of 0 makes of dt
    if trapezoidal:  # the mixer's rule: the step after a closed row has no open one to pair with
        after = np.setdiff1d(_GAPS + 1, _GAPS)
        inputs["lam"] = inputs["lam"].at[after].set(1.0)
    else:
        inputs["lam"] = None
    if not complex_phase:
        inputs["theta"] = None
    y, carry = selective_scan(**inputs, chunk_size=5)
    y_ref, carry_ref = selective_scan_reference(**inputs)
    assert max_error((y, carry), (y_ref, carry_ref)) <= 1e-5  # the chunked path against the literal one
    # The same series with the closed rows deleted: the same outputs on every open row, the same state.
    deleted = {k: (v if v is None or k == "a" else v[open_rows]) for k, v in inputs.items()}
    if trapezoidal:  # the step after a gap follows a deleted row: it keeps the Euler rule
        deleted["lam"] = deleted["lam"].at[np.searchsorted(open_rows, after)].set(1.0)
    y_open, carry_open = selective_scan_reference(**deleted)
    assert max_error((y[open_rows], carry), (y_open, carry_open)) <= 1e-5
    # Not a vacuous check: with the calendar's dt on those rows the open rows after them read otherwise.
    y_calendar, _ = selective_scan_reference(**{**inputs, "dt": _scan_inputs(key)["dt"]})
    assert max_error(y_calendar[open_rows], y_open) > 1e-3


def test_the_mixer_clock_scales_the_step_and_closes_rows():
    mixer = perturb(Mamba(CONFIG.replace(trapezoidal=True), key=jax.random.key(2))).layers[0]
    x = jax.random.normal(jax.random.key(1), (13, 16))
    plain, _ = mixer(x)
    ones, _ = mixer(x, clock=jnp.ones(13))
    assert max_error(ones, plain) <= 1e-6
    closed, _ = mixer(x, clock=jnp.ones(13).at[6].set(0.0))
    assert max_error(closed[:6], plain[:6]) <= 1e-6 and max_error(closed[6:], plain[6:]) > 1e-4
    # The chunked scan and the literal one agree on a clocked mixer with a closure.
    reference, _ = mixer(x, clock=jnp.ones(13).at[6].set(0.0), reference=True)
    assert max_error(closed, reference) <= 1e-5


def test_bc_norm_gives_b_and_c_the_rms_of_their_gains(monkeypatch):
    import chaosfm.models._mamba as mamba_module

    seen = []

    def capture(x, dt, a, b, c, **kwargs):
        seen.append((np.asarray(b), np.asarray(c)))
        return selective_scan(x, dt, a, b, c, **kwargs)

    monkeypatch.setattr(mamba_module, "selective_scan", capture)
    gains = np.asarray([0.5, 1.0, 2.0, 3.0], np.float32)
    x = 3.0 * jax.random.normal(jax.random.key(1), (13, 16))
    normed = Mamba(CONFIG.replace(bc_norm=True), key=jax.random.key(2)).layers[0]
    normed = eqx.tree_at(lambda m: (m.b_gain, m.c_gain), normed, (jnp.asarray(gains), jnp.asarray(2 * gains)))
    normed(x)
    b, c = seen.pop()
    # Each step's B divided by the gains has unit RMS over the state (C likewise, with twice the gains).
    np.testing.assert_allclose(np.sqrt(np.mean((b / gains) ** 2, axis=-1)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(np.mean((c / (2 * gains)) ** 2, axis=-1)), 1.0, rtol=1e-4)
    Mamba(CONFIG, key=jax.random.key(2)).layers[0](x)  # without it, the projections' own sizes
    b, _ = seen.pop()
    assert np.ptp(np.sqrt(np.mean(b**2, axis=-1))) > 0.1


def test_the_gated_mlp_follows_each_mixer_in_its_own_residual():
    from chaosfm.models import MambaBlock
    from chaosfm.models._base import rms_norm

    model = perturb(Mamba(CONFIG.replace(gated_mlp=True), key=jax.random.key(4)))
    assert [type(layer) for layer in model.layers] == [MambaBlock, MambaBlock]
    block = model.layers[0]
    h = jax.random.normal(jax.random.key(5), (11, 16))
    out, _ = block(h)
    # By hand, in numpy: the mixer's update on the normed stream, then the SwiGLU MLP on the normed result.
    update, _ = block.mixer(rms_norm(h))
    mid = np.asarray(h, np.float64) + np.asarray(update, np.float64)
    x = mid / np.sqrt(np.mean(mid**2, axis=-1, keepdims=True) + 1e-6)
    gate, up, down = (np.asarray(w, np.float64) for w in (block.mlp.w_gate, block.mlp.w_up, block.mlp.w_down))
    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    expected = mid + (silu(x @ gate) * (x @ up)) @ down
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)
    # Freshly built, the MLP's output map is zero: the block starts as the mixer alone.
    fresh = Mamba(CONFIG.replace(gated_mlp=True), key=jax.random.key(4)).layers[0]
    start, _ = fresh(h)
    mixer_only, _ = fresh.mixer(rms_norm(h))
    assert max_error(start, h + mixer_only) <= 1e-6


def test_hybrid_layout_puts_attention_every_n_layers():
    model = Mamba(
        CONFIG.replace(n_layers=6, attention_every=3, attention_heads=2, attention_kv_heads=1),
        key=jax.random.key(0),
    )
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Mamba2Mixer", "Mamba2Mixer", "Block"] * 2


def test_sizes_span_one_to_twenty_million_parameters():
    tiny = count_params(Mamba(MambaConfig.from_size("tiny", vocab_size=256), key=jax.random.key(0)))
    small = count_params(Mamba(MambaConfig.from_size("small", vocab_size=256), key=jax.random.key(0)))
    assert 0.8e6 <= tiny <= 1.3e6
    assert 17e6 <= small <= 23e6


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"head_dim": 7}, "head_dim"),
        ({"d_state": 5}, "d_state"),
        ({"attention_every": -1}, "attention_every"),
    ],
)
def test_config_errors_name_the_field(changes, key):
    with pytest.raises(ValueError, match=key):
        MambaConfig(**changes)
