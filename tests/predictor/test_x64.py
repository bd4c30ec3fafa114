"""float64 mode (``--x64``, ``CHAOSFM_X64=1``): the predictor computes in float64 when JAX's x64 is
on, agrees with float32 where float32 suffices, keeps the digits float32 loses, refuses a snapshot of
the other dtype, and the CLI flag reaches the jobs' configs.

In-process tests switch x64 on with ``jax.enable_x64`` (thread-local, so the rest of the suite
stays float32); what must see a process started with it on (the CLI, the environment variable) runs
in a subprocess.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm._config import X64_ENV, float_dtype, x64_requested
from chaosfm.predictor import (
    KERNELS,
    PredictorConfig,
    SnapshotError,
    init_predictor,
    load_snapshot,
    malliavin_path,
    save_snapshot,
)
from chaosfm.predictor._predictor import jitted_update, update_predictor

CONFIG = PredictorConfig()
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _outputs(values: np.ndarray, *, x64: bool) -> list:
    """The predictor's outputs over ``values`` (host copies), computed with x64 on or off."""
    with jax.enable_x64(x64):
        step = jitted_update(CONFIG)
        state = init_predictor(CONFIG, float(values[0]), key=jax.random.key(0))
        outs = []
        for value in values[1:]:
            out, state = step(state, value)
            outs.append(jax.device_get(out))
    return outs


@pytest.fixture(scope="module")
def random_walk():
    """300 steps of a unit Gaussian random walk from 100: float32's rounding (~1e-5 here) is far
    below every statistic's scale, so the two precisions must agree."""
    values = 100.0 + np.cumsum(np.random.default_rng(0).standard_normal(301))
    return values, _outputs(values, x64=False), _outputs(values, x64=True)


def test_float_dtype_follows_x64():
    assert float_dtype() == np.float32
    with jax.enable_x64(True):
        assert float_dtype() == np.float64


@pytest.mark.parametrize("options", [{}, {"meta_learning": True}], ids=["default", "meta_learning"])
def test_the_whole_state_and_step_are_float64_with_x64_on(options):
    # A trace, not a run: no compile, so it stays in the fast suite.
    config = CONFIG.model_copy(update=options)
    with jax.enable_x64(True):
        state = init_predictor(config, 100.0, key=jax.random.key(0))
        jaxpr = str(jax.make_jaxpr(lambda s, v: update_predictor(s, v, config))(state, 101.0))
    floats = {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)
              if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) and np.issubdtype(leaf.dtype, np.floating)}
    assert floats == {np.dtype(np.float64)}
    assert "f32" not in jaxpr  # no literal float32 cast left anywhere in the step


@pytest.mark.slow  # compiles the step twice (float32 and float64): 30-70 s on 2 shared cores
def test_float32_and_float64_agree_on_a_stable_random_walk(random_walk):
    # The outputs that draw no random numbers (float64 draws other bits than float32 from the same
    # key, so the stable kernel's Monte Carlo, the DGM's initial weights and hence the mixture
    # weights differ by design). float32's relative rounding is 6e-8; over 300 steps of EMAs,
    # recursive least squares and WTMM slopes the measured gap is at most 3e-6 relative (1.5e-5
    # absolute on statistics of order 1-100), so 1e-4 relative, with an absolute floor of 1e-4 for
    # values crossing zero, leaves a 30x margin and still catches any real divergence.
    _, outs32, outs64 = random_walk
    for out, dtype in ((outs32[-1], np.float32), (outs64[-1], np.float64)):
        floats = {leaf.dtype for leaf in jax.tree_util.tree_leaves(out) if np.issubdtype(leaf.dtype, np.floating)}
        assert floats == {np.dtype(dtype)}
    warm = slice(CONFIG.warmup + 8, None)

    def series(outs, read):
        return np.array([read(out) for out in outs[warm]], np.float64)

    reads = {
        "prediction": lambda o: o.prediction,
        "hoelder": lambda o: o.hoelder,
        "cusum_statistic": lambda o: o.cusum_statistic,
        "cusum_threshold": lambda o: o.cusum_threshold,
        "kurtosis": lambda o: o.kurtosis,
        "error": lambda o: o.error,
        **{f"{KERNELS[k]}_prediction": (lambda o, k=k: o.kernel_predictions[k]) for k in (2, 3)},
        **{f"{KERNELS[k]}_std": (lambda o, k=k: o.kernel_stds[k]) for k in (2, 3)},
    }
    for name, read in reads.items():
        single, double = series(outs32, read), series(outs64, read)
        assert np.all(np.isfinite(double)), name
        np.testing.assert_allclose(single, double, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.slow  # compiles the step twice when run alone (after the test above: a few seconds)
def test_float64_keeps_increments_float32_cannot_resolve():
    # Levels near 1.2e8 moving by 0.01: float32's spacing there is 8, so every level rounds to a
    # multiple of 8 (123456789 -> 123456792) and the increments vanish. The one-step prediction
    # (the last level, drift 0) then misses by ~3, 400 times a typical move, and the predictive
    # spread collapses to 0; in float64 the miss is the walk's own move and the spread its scale.
    values = 123456789.0 + np.cumsum(0.01 * np.random.default_rng(1).standard_normal(201))
    typical_move = np.mean(np.abs(np.diff(values)))  # ~0.008
    results = {}
    for x64 in (False, True):
        outs = _outputs(values, x64=x64)[CONFIG.warmup + 8 : -1]
        predictions = np.array([out.prediction for out in outs], np.float64)
        observed = values[CONFIG.warmup + 10 :]
        spreads = np.array([np.std(np.asarray(out.samples, np.float64)) for out in outs])
        results[x64] = (np.mean(np.abs(predictions - observed)), np.median(spreads))
    (error32, spread32), (error64, spread64) = results[False], results[True]
    assert error64 < 1.5 * typical_move  # a random walk's best one-step error is its typical move
    assert error32 > 100 * typical_move
    assert 0.5 * 0.01 < spread64 < 2 * 0.01  # the increments' standard deviation is 0.01
    assert spread32 < 1e-3 * 0.01


def test_malliavin_paths_follow_the_dtype():
    def path():
        return malliavin_path(lambda x: 0.05 * x, lambda x: 0.2 * x, 100.0, 1.0, key=jax.random.key(1), steps=8)

    assert {np.asarray(leaf).dtype for leaf in path()} == {np.dtype(np.float32)}
    with jax.enable_x64(True):
        assert {np.asarray(leaf).dtype for leaf in path()} == {np.dtype(np.float64)}


def test_a_snapshot_records_its_dtype_and_is_refused_by_a_process_of_the_other(tmp_path):
    single = init_predictor(CONFIG, 100.0, key=jax.random.key(2))
    save_snapshot(single, tmp_path / "f32.msgpack", config=CONFIG)
    with jax.enable_x64(True):
        double = init_predictor(CONFIG, 123456789.01, key=jax.random.key(2))
        save_snapshot(double, tmp_path / "f64.msgpack", config=CONFIG)
        restored = load_snapshot(tmp_path / "f64.msgpack").state  # same dtype: a bit-exact round trip
        assert restored.last.dtype == np.float64 and float(restored.last) == 123456789.01
        with pytest.raises(SnapshotError, match="holds a float32 state but this process computes in float64"):
            load_snapshot(tmp_path / "f32.msgpack")
    with pytest.raises(SnapshotError, match="holds a float64 state but this process computes in float32") as error:
        load_snapshot(tmp_path / "f64.msgpack")
    assert "--x64" in str(error.value)
    assert load_snapshot(tmp_path / "f32.msgpack").state.last.dtype == np.float32


def test_x64_is_requested_by_the_key_or_the_environment(monkeypatch):
    monkeypatch.delenv(X64_ENV, raising=False)
    assert not x64_requested(None) and not x64_requested(False) and x64_requested(True)
    for text, wanted in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(X64_ENV, text)
        assert x64_requested(False) is wanted


def test_the_environment_variable_switches_a_process_to_float64():
    code = ("from chaosfm._config import enable_x64, float_dtype; import jax.numpy as jnp; "
            "print(enable_x64(), float_dtype(), jnp.zeros(1).dtype)")
    for value, printed in (("1", "True float64 float64"), ("0", "False float32 float32")):
        result = subprocess.run([sys.executable, "-c", code], env={**ENV, X64_ENV: value}, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == printed.split()


def test_the_x64_flag_reaches_every_predictor_job_config():
    from chaosfm.cli._main import build_parser
    from chaosfm.cli._parser import overrides
    from chaosfm.jobs import evaluate, greeks, stream, tune

    parser = build_parser()
    args = parser.parse_args(["stream", "--data", "sp500", "--out", "o", "--x64"])
    assert stream.read(None, overrides(args, stream.FLAGS, ("data", "out", "x64"))).stream.x64 is True
    args = parser.parse_args(["stream", "--data", "sp500", "--out", "o"])
    assert stream.read(None, overrides(args, stream.FLAGS, ("data", "out", "x64"))).stream.x64 is False
    args = parser.parse_args(["tune", "--data", "sp500", "--x64"])
    assert tune.read(None, overrides(args, tune.FLAGS, ("data", "x64"))).base.x64 is True
    args = parser.parse_args(["evaluate", "--data", "sp500", "--x64"])
    config = evaluate.read(None, {**overrides(args, evaluate.FLAGS, ("x64",)), "datasets": [{"name": "sp500"}]})
    assert config.x64 is True
    args = parser.parse_args(["greeks", "--spot", "100", "--strike", "100", "--vol", "0.2", "--out", "o", "--x64"])
    assert greeks.read(None, overrides(args, greeks.FLAGS, ("spot", "strike", "vol", "out", "x64"))).x64 is True


def test_greeks_with_x64_record_it(tmp_path):
    out = tmp_path / "greeks"
    command = [sys.executable, "-m", "chaosfm.cli", "greeks", "--spot", "100", "--strike", "105", "--vol", "0.25",
               "--paths", "20000", "--batch-size", "10000", "--out", str(out), "--x64"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["x64"] is True
    assert abs(metrics["delta"]["value"][0] - metrics["closed_form"]["delta"]) < 5 * metrics["delta"]["standard_error"][0]


@pytest.mark.slow  # a fresh process traces and compiles the predictor in float64 (~30-60 s on 2 cores)
def test_stream_with_the_x64_flag_computes_and_records_float64(tmp_path):
    values = 123456789.0 + np.cumsum(0.01 * np.random.default_rng(3).standard_normal(60))
    data = tmp_path / "levels.csv"
    pd.DataFrame({"timestamp": np.arange(60), "x0": values}).to_csv(data, index=False, float_format="%.6f")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "chaosfm.cli", "stream", "--data", str(data), "--out", str(out), "--x64",
               "--no-compilation-cache", "--set", "stream.predictor.dgm.fit_steps=0", "--set", "stream.plot=false"]
    result = subprocess.run(command, env={**ENV, X64_ENV: "0"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["x64"] is True and metrics["dtype"] == "float64"
    rows = pd.read_csv(out / "predictions.csv")
    warm = rows[rows["warm"]]
    # drift 0: the prediction is the last level itself, which float32 would round by up to 4.
    assert np.max(np.abs(warm["prediction_next"] - warm["observed"])) < 1e-6
    assert np.all(warm["0.9"] - warm["0.1"] > 1e-3)  # a spread float32 would collapse to 0
