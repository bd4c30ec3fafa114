"""``chaosfm stream``: the job streams a dataset's column or stdin lines and writes the outputs."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import DataError
from chaosfm.jobs import stream
from chaosfm.predictor import PredictorConfig, StreamConfig

# One compiled step shared with tests/predictor (the same predictor config): fit_steps=0 skips the
# DGM warm start, and no persistent compilation cache (a process-wide setting) is turned on.
STREAM = StreamConfig(predictor=PredictorConfig(dgm={"fit_steps": 0}), compilation_cache=False)


def _csv(path, values):
    frame = pd.DataFrame({"timestamp": pd.bdate_range("2020-01-01", periods=len(values)), "x0": values})
    frame.to_csv(path, index=False)
    return str(path)


def _walk(n, seed=0):
    return 100.0 + np.cumsum(np.random.default_rng(seed).standard_normal(n))


def test_the_job_writes_every_output_and_the_metrics_it_returns(tmp_path):
    data = _csv(tmp_path / "walk.csv", _walk(120))
    config = stream.StreamJob(data=data, out=tmp_path / "out", stream=STREAM)
    metrics = stream.run(config, column_given=False)  # a trajectory streams x0
    out = tmp_path / "out"
    for name in ("predictions.csv", "telemetry.csv", "metrics.json", "telemetry.png", "meta.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 119
    # A file's rows, 0-based (row 0 only starts the state); no text lines: the frame was loaded.
    assert predictions["row"].tolist() == list(range(1, 120)) and predictions["line"].isna().all()
    assert (predictions["0.1"] <= predictions["0.9"]).all()
    telemetry = pd.read_csv(out / "telemetry.csv")
    np.testing.assert_allclose(telemetry.filter(like="weight_").sum(axis=1), 1.0, atol=1e-5)
    assert json.loads((out / "meta.json").read_text())["seed"] == STREAM.seed


def test_a_bad_line_is_raised_after_the_good_rows_are_written(tmp_path):
    lines = ["close"] + [f"{v:.4f}" for v in _walk(40)] + ["nan"] + ["101.0"]
    config = stream.read(None, {"data": "-", "out": str(tmp_path / "out"), "stream.on_bad_line": "raise",
                                "stream.compilation_cache": False, "stream.predictor.dgm.fit_steps": 0})
    with pytest.raises(DataError, match="line 42"):
        stream.run(config, lines=lines)
    assert len(pd.read_csv(tmp_path / "out" / "predictions.csv")) == 39


def test_stdin_takes_json_objects_beside_csv_lines_and_numbers_rows_and_lines_as_read(tmp_path):
    import json as json_module

    from chaosfm.predictor import PREDICTION_COLUMNS

    values = _walk(40)
    stamps = [str(t) for t in pd.bdate_range("2021-01-01", periods=40)]
    lines = ["Date,Close", *[f"{stamps[i]},{values[i]:.4f}" for i in range(20)], "",
             *[json_module.dumps({"Date": stamps[i], "Close": float(values[i])}) for i in range(20, 40)]]
    config = stream.read(None, {"data": "-", "out": str(tmp_path / "out"), "stream.compilation_cache": False,
                                "stream.predictor.dgm.fit_steps": 0, "stream.plot": False})
    metrics = stream.run(config, lines=lines)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert metrics["bad_lines"] == [] and metrics["observations"] == 40
    np.testing.assert_allclose(predictions["observed"], values[1:], atol=1e-4)
    # line: the 1-based line of stdin (the header and the blank line count); row: the data row.
    assert predictions["line"].tolist() == list(range(3, 22)) + list(range(23, 43))
    assert predictions["row"].tolist() == list(range(1, 40))


def test_a_live_feed_skips_bad_lines_unless_told_otherwise(tmp_path):
    live = stream.read(None, {"data": "-", "out": str(tmp_path)})
    assert live.live and live.stream.on_bad_line == "skip"
    assert stream.read(None, {"data": "prices.csv", "out": str(tmp_path)}).stream.on_bad_line == "raise"


def test_an_output_that_cannot_be_written_is_an_error_before_the_first_step(tmp_path):
    from chaosfm._config import ConfigError

    data = _csv(tmp_path / "walk.csv", _walk(30))
    missing = tmp_path / "missing" / "s.msgpack"
    ready = []
    config = stream.StreamJob(data=data, out=tmp_path / "out", stream=STREAM.model_copy(update={"snapshot": missing}))
    with pytest.raises(ConfigError, match=f"snapshot.*{missing}.*does not exist"):
        stream.run(config, column_given=False, on_ready=ready.append)
    assert ready == [] and not missing.parent.exists()
    (tmp_path / "taken").write_text("a file, not a folder")
    config = stream.StreamJob(data=data, out=tmp_path / "taken", stream=STREAM)
    with pytest.raises(ConfigError, match=f"out.*{tmp_path / 'taken'}"):
        stream.run(config, column_given=False, on_ready=ready.append)
    assert ready == []


def test_live_lines_keep_order_and_raise_the_readers_error():
    assert list(stream.live_lines(iter(["a\n", "b\n", "c\n"]), buffered=2)) == ["a\n", "b\n", "c\n"]

    def broken():
        yield "a\n"
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    lines = stream.live_lines(broken())
    assert next(lines) == "a\n"
    with pytest.raises(UnicodeDecodeError):
        next(lines)


def test_a_sigint_taken_by_another_thread_still_stops_a_feed_that_sends_nothing():
    """The kernel may give SIGINT to any thread; the main thread must not sleep on in read()."""
    import os
    import signal
    import threading
    import time

    read_end, write_end = os.pipe()
    source = os.fdopen(read_end)  # nothing is ever written: a read blocks
    lines = stream.live_lines(source, poll_seconds=0.05)

    def interrupt_the_reader():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reader = [t for t in threading.enumerate() if t.name == "chaosfm-stdin"]
            if reader:
                time.sleep(0.1)
                signal.pthread_kill(reader[0].ident, signal.SIGINT)
                return
            time.sleep(0.01)

    finished = threading.Event()

    def end_the_feed_if_still_waiting():  # so that a failure fails the test instead of hanging it
        if not finished.wait(20):
            finished.set()
            os.close(write_end)

    # A test runner's worker may run with SIGINT ignored; the handler a terminal process has.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_the_reader, daemon=True).start()
    threading.Thread(target=end_the_feed_if_still_waiting, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(lines)
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGINT, before)
        if not finished.is_set():
            finished.set()
            os.close(write_end)  # the reader sees EOF and ends
