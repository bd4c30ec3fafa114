"""The predictor's programs: loaded exports trace nothing and compute the traced programs' bits."""

import logging

import jax
import numpy as np
import pytest

from chaosfm.predictor import PredictorConfig
from chaosfm.predictor import _packed_step as packed_module
from chaosfm.predictor._packed_step import PackedStep, packed_step

from .test_stream import PREDICTOR, _walk


def _forbid_tracing(monkeypatch):
    """Loading must not trace the predictor: its Python functions raise if called."""

    def refuse(*args, **kwargs):
        raise AssertionError("the predictor was traced")

    for name in ("_unguarded_update", "init_predictor", "_warm_start"):
        monkeypatch.setattr(packed_module, name, refuse)


def _bits(packed):
    return [np.asarray(array).tobytes() for array in jax.device_get(tuple(packed))]


def _run(step, series, key):
    """Every output and state of init + one step per value, as bytes."""
    packed = step.init(np.float32(series[0]), key)
    seen = [_bits(packed)]
    for value in series[1:]:
        out, packed = step(packed, np.float32(value))
        seen += [_bits(out), _bits(packed)]
    return seen, packed


@pytest.mark.slow  # two compiles of the step (traced and exported): 9-16 s on 2 cores, more when loaded
def test_loaded_programs_trace_nothing_and_match_the_traced_ones(cache, tmp_path, monkeypatch, caplog):
    series, key = _walk(40, seed=21), jax.random.key(4)
    traced = packed_step(PREDICTOR)  # the shared compiled step (no export folder)
    expected, _ = _run(traced, series, key)
    exported = PackedStep(PREDICTOR, export_dir=tmp_path / "exports")
    assert _run(exported, series, key)[0] == expected
    assert exported.status == {"init": "exported", "step": "exported"}
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "exports").iterdir()) == ["init", "step"]

    _forbid_tracing(monkeypatch)
    loaded = PackedStep(PREDICTOR, export_dir=tmp_path / "exports")  # as a restarted process
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        seen, packed = _run(loaded, series, key)
    assert loaded.status == {"init": "loaded", "step": "loaded"}
    assert seen == expected
    # Each program lowered once: the check made on loading is the lowering its first call uses.
    lowered = [r.getMessage() for r in caplog.records if "jaxpr to MLIR module conversion jit(call)" in r.getMessage()]
    assert len(lowered) == 2, lowered
    assert loaded._state_layout is None  # not even the state's layout was traced
    assert loaded.state_sizes == traced.state_sizes
    # The host-side output layout came from the file: the decoded output is the traced one's.
    copy = traced.pack(traced.unpack(packed))  # before the loaded step donates packed
    out, _ = loaded(packed, np.float32(101.0))
    out_traced, _ = traced(copy, np.float32(101.0))
    for name, value in loaded.output(out)._asdict().items():
        np.testing.assert_array_equal(value, getattr(traced.output(out_traced), name), err_msg=name)


@pytest.mark.slow  # two compiles of the training (traced and exported): 10-19 s on 2 cores
def test_warm_start_program_matches_the_traced_one(cache, tmp_path, monkeypatch, caplog):
    config = PREDICTOR.model_copy(update={"dgm": PREDICTOR.dgm.model_copy(update={"fit_steps": 3})})
    state = packed_step(PREDICTOR).pack(
        packed_module.init_predictor(config, 100.0, key=jax.random.key(2)))  # same shapes as config's
    key = jax.random.key(9)
    expected = _bits(packed_step(config).warm_start(state, key))
    assert expected != _bits(state)  # the training moved the network
    exported = PackedStep(config, export_dir=tmp_path)
    assert _bits(exported.warm_start(state, key)) == expected
    _forbid_tracing(monkeypatch)
    loaded = PackedStep(config, export_dir=tmp_path)
    loaded.compile_warm_start(key)  # what warm_up does in its thread
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        assert _bits(loaded.warm_start(state, key)) == expected
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]  # compiled ahead, as it runs
    assert loaded.status == {"step": "loaded", "warm_start": "loaded"}  # the step's file gave the sizes


def test_no_training_no_program(tmp_path):
    step = PackedStep(PredictorConfig(dgm={"fit_steps": 0}), export_dir=tmp_path)
    state = object()
    assert step.warm_start(state, jax.random.key(0)) is state
    step.compile_warm_start(jax.random.key(0))
    assert step.status == {} and not any(tmp_path.iterdir())
