"""``chaosfm stream`` as a process: a SIGINT keeps what was streamed."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


@pytest.mark.slow  # a fresh process compiles the predictor (~20-40 s)
def test_sigint_mid_stream_writes_the_outputs_and_a_final_snapshot(tmp_path):
    out, snapshot = tmp_path / "out", tmp_path / "s.msgpack"
    command = [sys.executable, "-m", "chaosfm.cli", "stream", "--data", "-", "--out", str(out), "--snapshot",
               str(snapshot), "--no-compilation-cache", "--set", "stream.predictor.dgm.fit_steps=0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    values = 100.0 + np.cumsum(np.random.default_rng(0).standard_normal(20))
    try:
        process.stdin.write("close\n" + "".join(f"{v:.4f}\n" for v in values))
        process.stdin.flush()  # and kept open: the feed is live, the stream waits for more
        lines = [process.stdout.readline() for _ in range(len(values) - 1)]  # waits for each prediction
        assert all(lines), process.stderr.read() if process.poll() is not None else lines
        printed = [json.loads(line) for line in lines]
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, errors
    assert rest == ""
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions["line"].tolist() == [row["line"] for row in printed] == list(range(3, 22))
    np.testing.assert_allclose(predictions["observed"], values[1:], atol=1e-4)
    assert len(pd.read_csv(out / "telemetry.csv")) == len(printed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["observations"] == len(values)
    assert metrics["snapshots_written"] == 1 and snapshot.stat().st_size > 0
    assert "interrupted" in errors
