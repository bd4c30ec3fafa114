"""Deterministic mode: same seed, same bits; a restored run predicts what an uninterrupted one did.

One compiled step (deterministic mode traces at matmul precision "highest", a separate compile
from test_stream's) is shared by every test here.
"""

import jax
import pandas as pd
import pytest

from chaosfm.predictor import deterministic_mode, run_stream

from .test_stream import STREAM, _walk

DETERMINISTIC = STREAM.model_copy(update={"deterministic": True})
LENGTH = 70  # past warm-up (32) with room either side of the interruption


def _run(config, out_dir, **source):
    rows = []
    result = run_stream(config, on_prediction=rows.append, **source)
    telemetry = pd.DataFrame(result.telemetry).drop(columns=["step_seconds"])
    return rows, telemetry, result.metrics


def test_mode_pins_precision_and_prng():
    with deterministic_mode():
        assert jax.config.jax_default_matmul_precision == "highest"
        assert jax.config.jax_default_prng_impl == "threefry2x32"
        assert str(jax.random.key_impl(jax.random.key(0))) == "threefry2x32"
    with deterministic_mode(False):
        assert jax.config.jax_default_matmul_precision is None


@pytest.mark.slow  # it pays this module's compile: ~20 s alone on 2 cores, more when loaded
def test_two_runs_with_one_seed_are_bit_identical(tmp_path):
    series = _walk(LENGTH, seed=11)
    first, telemetry_a, _ = _run(DETERMINISTIC, tmp_path / "a", series=series)
    second, telemetry_b, _ = _run(DETERMINISTIC, tmp_path / "b", series=series)
    assert first == second  # floats compared exactly
    pd.testing.assert_frame_equal(telemetry_a, telemetry_b, check_exact=True)
    # ... and the comparison is not vacuous: another seed draws other samples.
    other, _, _ = _run(DETERMINISTIC.model_copy(update={"seed": 1}), tmp_path / "c", series=series)
    warm = [i for i, row in enumerate(first) if row["warm"]]
    assert any(first[i]["0.1"] != other[i]["0.1"] for i in warm)


@pytest.mark.parametrize("cut", [20, 45])  # before warm-up ends (restores started=False) and after
def test_restore_equals_uninterrupted_step_for_step(cut, tmp_path):
    series = _walk(LENGTH, seed=12)
    whole, whole_telemetry, whole_metrics = _run(DETERMINISTIC, tmp_path / "whole", series=series)
    snapshot = tmp_path / "s.msgpack"
    head, _, head_metrics = _run(DETERMINISTIC.model_copy(update={"snapshot": snapshot}), tmp_path / "head",
                                 series=series[:cut])
    # A new run given the whole series resumes after the snapshot's last row.
    tail, tail_telemetry, tail_metrics = _run(DETERMINISTIC.model_copy(update={"restore": snapshot}),
                                              tmp_path / "tail", series=series)
    assert head + tail == whole
    assert [row["row"] for row in tail] == list(range(cut, LENGTH))  # rows of the series, 0-based
    expected = whole_telemetry.iloc[cut - 1 :].reset_index(drop=True)
    pd.testing.assert_frame_equal(tail_telemetry, expected, check_exact=True)
    # The restored last prediction is scored against the first new value: the two halves' scores
    # add up to the whole run's (the random-walk reference differs, the predictor's may not).
    scored = head_metrics.get("scored_steps", 0) + tail_metrics["scored_steps"]
    assert scored == whole_metrics["scored_steps"]
    weighted = head_metrics.get("predictor", {}).get("crps", 0.0) * head_metrics.get("scored_steps", 0)
    weighted += tail_metrics["predictor"]["crps"] * tail_metrics["scored_steps"]
    assert weighted == pytest.approx(whole_metrics["predictor"]["crps"] * scored, rel=1e-12)


def test_restore_continues_a_live_feed(tmp_path):
    values = [f"{v:.4f}" for v in _walk(50, seed=13)]
    whole, _, _ = _run(DETERMINISTIC, tmp_path / "whole", lines=values)
    snapshot = tmp_path / "s.msgpack"
    head, _, _ = _run(DETERMINISTIC.model_copy(update={"snapshot": snapshot}), tmp_path / "head", lines=values[:37])
    # A feed gives only new lines, numbered from 1 (and rows from 0) again.
    tail, _, _ = _run(DETERMINISTIC.model_copy(update={"restore": snapshot}), tmp_path / "tail", lines=values[37:])
    drop_line = [{k: v for k, v in row.items() if k not in ("row", "line")} for row in whole]
    assert [{k: v for k, v in row.items() if k not in ("row", "line")} for row in head + tail] == drop_line


@pytest.mark.slow  # one more restore through this module's compiled step
def test_restore_keeps_the_adaptive_conformal_levels(tmp_path):
    calibrated = DETERMINISTIC.model_copy(update={"calibration_gamma": 0.05})
    series = _walk(LENGTH, seed=13)
    whole, _, _ = _run(calibrated, tmp_path / "whole", series=series)
    snapshot = tmp_path / "s.msgpack"
    head, _, _ = _run(calibrated.model_copy(update={"snapshot": snapshot}), tmp_path / "head", series=series[:50])
    tail, _, _ = _run(calibrated.model_copy(update={"restore": snapshot}), tmp_path / "tail", series=series)
    assert head + tail == whole
    assert whole[-1]["level_0.9"] != 0.9  # the levels did move
