"""Flags and modes of the predictor step: degraded_inference with its hysteresis, the DGM's
suspension after a mode collapse, the kurtosis tiers, and the config rules behind them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm._config import ConfigError, parse_config
from chaosfm.predictor import PredictorConfig, init_predictor
from chaosfm.predictor._kernel_dgm import _with_params
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._draws import DGM_KERNEL, KERNELS
from chaosfm.predictor._predictor import FRESHNESS_FIELDS, _keep_if_finite, freshness_mask

# fit_steps=0: no network training needed here; ttl 5 so the exit count is ceil(0.8 * 5) = 4.
# One config for every test: the production step (packed_step) is compiled once for all.
CONFIG = PredictorConfig(dgm={"fit_steps": 0}, degraded_ttl=5, mode_collapse_steps=3)


def _step(config: PredictorConfig):
    """The production step over ``PredictorState`` trees (packed and unpacked around each call)."""
    packed = packed_step(config)

    def step(state, value):
        out, state = packed(packed.pack(state), np.float32(value))
        return packed.output(out), packed.unpack(state)

    return step


def _series(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + np.cumsum(rng.standard_normal(length))).astype(np.float32)


def _warm_state(config: PredictorConfig, length: int, key) -> tuple:
    values = _series(length)
    state = init_predictor(config, float(values[0]), key=key)
    for value in values[1:]:
        _, state = _step(config)(state, value)
    return state


def test_degraded_exit_count_is_the_ceiling_of_the_fraction():
    assert CONFIG.degraded_exit_steps == 4
    assert PredictorConfig().degraded_exit_steps == 8  # ttl 10
    assert PredictorConfig(degraded_ttl=3).degraded_exit_steps == 3  # ceil(2.4)
    assert PredictorConfig(degraded_ttl=1).degraded_exit_steps == 1


def test_degraded_inference_enters_holds_and_leaves_at_the_hysteresis_count(key):
    # Hand-traced with ttl 5 and exit count 4; F a fresh value, N a missing one (NaN).
    #   N x4            stale 1..4          -> not entered (a gap shorter than the TTL)
    #   F x2                                -> not degraded
    #   N x5            stale 1..5          -> entered on the 5th
    #   F x3            fresh run 1..3      -> held (3 < 4)
    #   N               run reset, stale 1  -> held (in the mode, stale < ttl does not leave it)
    #   F x3            run 1..3            -> held
    #   F               run 4               -> left, exactly at the hysteresis count
    #   F x2                                -> not degraded
    pattern = "NNNN" "FF" "NNNNN" "FFF" "N" "FFF" "F" "FF"
    expected = [False] * 4 + [False] * 2 + [False] * 4 + [True] + [True] * 3 + [True] + [True] * 3 + [False] * 3
    assert len(expected) == len(pattern)
    state = _warm_state(CONFIG, 50, key)  # warm (warmup 32): the weights move on fresh steps
    values = iter(_series(len(pattern), seed=1) + float(state.last) - 100.0)
    step = _step(CONFIG)
    flags, weights = [], [np.asarray(state.orchestrator.weights)]
    for kind in pattern:
        value = np.float32(next(values)) if kind == "F" else np.float32(np.nan)
        out, state = step(state, value)
        flags.append(bool(out.degraded_inference))
        weights.append(np.asarray(state.orchestrator.weights))
    assert flags == expected
    # Frozen: from the step that entered the mode through the last one it held, the weights are
    # bit-identical to those before entry (missing steps keep the whole state anyway).
    entered = expected.index(True)
    left = len(expected) - 1 - expected[::-1].index(True) + 1  # first step after the mode
    for held in range(entered, left):
        np.testing.assert_array_equal(weights[held + 1], weights[entered])
    # Fresh steps outside the mode move them (the step that leaves the mode is one).
    assert not np.array_equal(weights[left + 1], weights[left])
    assert not np.array_equal(weights[6], weights[5])  # the second F after the short gap


def test_missing_steps_leave_everything_but_the_counters(key):
    # update_predictor's guard on trees (the packed step's is tested above and in
    # test_stream.py): between two different states, a NaN keeps the old one but for the
    # freshness counters, which come from the new one; a finite value takes the new one whole.
    old = _warm_state(CONFIG, 40, key)
    new = _step(CONFIG)(old, np.float32(float(old.last) + 1.0))[1]._replace(
        stale_steps=jnp.asarray(3, jnp.int32), fresh_steps=jnp.asarray(0, jnp.int32), degraded=jnp.asarray(True)
    )
    kept = _keep_if_finite(np.float32(np.nan), new, old, freshness_mask(new))
    taken = _keep_if_finite(np.float32(1.0), new, old, freshness_mask(new))

    def leaves(state):
        return [np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                           else leaf) for leaf in jax.tree_util.tree_leaves(state)]

    for name in old._fields:
        want = getattr(new if name in FRESHNESS_FIELDS else old, name)
        for got, expected in zip(leaves(getattr(kept, name)), leaves(want), strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=name)
    for got, expected in zip(leaves(taken), leaves(new), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(np.asarray(new.levels), np.asarray(old.levels))  # the states differ


def _collapse(state, config: PredictorConfig, params):
    return state._replace(dgm=_with_params(state.dgm, params, state.dgm.opt_state, config.dgm))


def test_mode_collapse_suspends_kernel_b_until_the_monitor_passes(key):
    config = CONFIG
    state = _warm_state(config, 40, key)
    healthy = state.dgm.params
    assert not bool(state.dgm.collapsed)
    # A network with a zero output layer has a flat V: exp(-V) is uniform, its normalised entropy
    # 1, above 1 - collapse_tolerance: the monitor reads collapsed.
    flat = {**healthy, "w_out": jnp.zeros_like(healthy["w_out"])}
    state = _collapse(state, config, flat)
    assert bool(state.dgm.collapsed) and float(state.dgm.entropy) == pytest.approx(1.0, abs=1e-6)
    values = iter(_series(60, seed=2) + float(state.last) - 100.0)
    step = _step(config)
    suspended_seen = False
    for _ in range(20):
        out, state = step(state, np.float32(next(values)))
        # The cache reads the monitor on the DGM's refresh (every 4th step); the flag comes
        # mode_collapse_steps warm steps after that.
        assert bool(out.dgm_suspended) == bool(out.mode_collapse) == (int(state.collapsed_steps) > 3)
        if bool(out.dgm_suspended):
            suspended_seen = True
            learnt = np.asarray(state.orchestrator.weights, np.float64)
            expected = learnt.copy()
            expected[DGM_KERNEL] = 0.0
            expected /= expected.sum()
            if not bool(out.emergency):
                np.testing.assert_allclose(np.asarray(out.weights), expected, rtol=1e-6)
            assert float(out.weights[DGM_KERNEL]) == 0.0
    assert suspended_seen
    # Retrained: a network that passes the monitor again. B returns on the first step whose DGM
    # refresh reads the passing monitor, with its learnt weight.
    state = _collapse(state, config, healthy)
    assert not bool(state.dgm.collapsed)
    back = []
    for _ in range(config.refresh_every):
        out, state = step(state, np.float32(next(values)))
        back.append(not bool(out.dgm_suspended))
    assert back[-1] and not bool(out.mode_collapse)
    if not bool(out.emergency):
        np.testing.assert_array_equal(np.asarray(out.weights), np.asarray(state.orchestrator.weights))
    assert float(out.weights[DGM_KERNEL]) > 0.0


def _window_with_kurtosis(target: float, size: int = 64) -> np.ndarray:
    """A centred window of ``size`` errors whose Pearson kurtosis is ``target`` (one +-s pair
    among +-1s; s found by bisection in float64)."""

    def kurtosis(s):
        window = np.array([1.0, -1.0] * (size // 2 - 1) + [s, -s])
        return np.mean(window**4) / np.mean(window**2) ** 2, window

    low, high = 1.0, 100.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if kurtosis(middle)[0] < target else (low, middle)
    return kurtosis(0.5 * (low + high))[1]


@pytest.mark.parametrize("target", [4.9, 5.1, 14.9, 15.1, 19.9, 20.1])
def test_kurtosis_tiers_around_each_threshold(target, key):
    state = _warm_state(CONFIG, 40, key)
    window = _window_with_kurtosis(target)
    size = CONFIG.cusum.kurtosis_window
    cusum = state.cusum._replace(window=jnp.asarray(window, jnp.float32), count=jnp.asarray(size, jnp.int32))
    out, new_state = _step(CONFIG)(state._replace(cusum=cusum), np.float32(float(state.last) + 0.5))
    assert float(out.kurtosis) == pytest.approx(target, abs=1e-3)
    # Hand-set tiers: high above 5, crisis above 15, invalid above 20 (cumulative).
    tiers = {4.9: (0, 0, 0), 5.1: (1, 0, 0), 14.9: (1, 0, 0), 15.1: (1, 1, 0), 19.9: (1, 1, 0), 20.1: (1, 1, 1)}
    assert (bool(out.high_volatility), bool(out.crisis), bool(out.residual_invalid)) == tuple(map(bool, tiers[target]))
    hoelder_trip = np.isfinite(float(out.hoelder)) and float(out.hoelder) < CONFIG.hoelder_threshold
    assert bool(out.emergency) == (hoelder_trip or target > 20)
    assert bool(new_state.emergency) == bool(out.emergency)  # the next prediction uses kernel D alone
    if target > 20:
        np.testing.assert_array_equal(np.asarray(out.weights), np.eye(len(KERNELS))[KERNELS.index("signature")])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kurtosis_high": 16.0}, "kurtosis thresholds must increase"),
        ({"kurtosis_crisis": 25.0}, "kurtosis thresholds must increase"),
        ({"kurtosis_invalid": 60.0}, "must be below cusum.kurtosis_ceiling"),
    ],
)
def test_bad_kurtosis_thresholds_are_a_config_error(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(PredictorConfig, values, "predictor")


def test_bad_degraded_ttl_is_a_config_error():
    with pytest.raises(ConfigError, match="degraded_ttl"):
        parse_config(PredictorConfig, {"degraded_ttl": 0}, "predictor")
