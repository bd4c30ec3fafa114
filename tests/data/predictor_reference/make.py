"""Regenerate the predictor's reference snapshot and its expected next predictions.

    .venv/bin/python tests/data/predictor_reference/make.py

writes, beside this file, ``snapshot.msgpack`` (the predictor after ``OBSERVED`` observations of a
fixed seeded series, in the project's snapshot format) and ``expected.json`` (the next ``AHEAD``
observations and what the production step, ``packed_step``, outputs for each). Run it only when a
change of results is intended (a new JAX, a predictor change) and say so in the change; the test
``tests/predictor/test_reference.py`` fails on any other change of results.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from chaosfm.predictor import PredictorConfig, init_predictor, load_snapshot, save_snapshot
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._snapshot import FORMAT_VERSION
from chaosfm.predictor._telemetry import FLAGS

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "snapshot.msgpack"
EXPECTED = HERE / "expected.json"
SEED = 20261202
OBSERVED = 60  # observations in the snapshot: past warm-up (32), every slow part refreshed
AHEAD = 10
# The default predictor but for the DGM warm start (fit_steps=0): no training, a small, fast file.
CONFIG = PredictorConfig(dgm={"fit_steps": 0})
COMPARED = ("prediction", "kernel_predictions", "samples", "kernel_stds", "mixture_std", "weights", "hoelder",
            "cusum_statistic", "kurtosis", "dgm_entropy", "free_energy")


def series() -> np.ndarray:
    """``OBSERVED + AHEAD`` float32 prices: a seeded geometric random walk from 100."""
    rng = np.random.default_rng(SEED)
    return (100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(OBSERVED + AHEAD)))).astype(np.float32)


def snapshot_state():
    """The state after the first ``OBSERVED`` values, through the production step."""
    values = series()
    step = packed_step(CONFIG)
    packed = step.pack(init_predictor(CONFIG, values[0], key=jax.random.key(SEED)))
    for value in values[1:OBSERVED]:
        _, packed = step(packed, np.float32(value))
    return step.unpack(packed)


def outputs_after(state) -> list[dict]:
    """The production step's outputs for the next ``AHEAD`` values from ``state``."""
    step = packed_step(CONFIG)
    packed = step.pack(state)
    rows = []
    for value in series()[OBSERVED:]:
        packed_out, packed = step(packed, np.float32(value))
        out = step.output(packed_out)
        row = {name: np.asarray(getattr(out, name), np.float64).tolist() for name in COMPARED}
        row.update({name: bool(getattr(out, name)) for name in (*FLAGS, "warm")})
        rows.append(row)
    return rows


def main() -> None:
    save_snapshot(snapshot_state(), SNAPSHOT, config=CONFIG)
    restored = load_snapshot(SNAPSHOT)  # the file as the test will read it
    document = {
        "about": "expected outputs of the predictor restored from snapshot.msgpack; regenerate with make.py",
        "snapshot_format_version": FORMAT_VERSION,
        "written_with": {name: restored.versions.get(name) for name in ("jax", "jaxlib", "chaosfm")},
        "seed": SEED,
        "observed": OBSERVED,
        "inputs": series()[OBSERVED:].astype(np.float64).tolist(),
        "outputs": outputs_after(restored.state),
    }
    EXPECTED.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {SNAPSHOT} ({SNAPSHOT.stat().st_size} bytes) and {EXPECTED}")


if __name__ == "__main__":
    main()
