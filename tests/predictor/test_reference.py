"""Version migration check: a stored snapshot must restore and predict what it predicted when made.

``tests/data/predictor_reference/`` holds the predictor after 60 observations of a seeded series
(``snapshot.msgpack``, the project's snapshot format) and the production step's outputs for the
next 10 observations (``expected.json``), both written by ``make.py`` there.

Tolerance: relative 1e-6 (about 8 float32 ulps), absolute 1e-6 for quantities of order one
(weights, standardised statistics) and 1e-6 of the price level for outputs in price units. On
one machine the step is bit-reproducible (test_determinism.py); the slack only absorbs the
last-bit reassociation a different XLA fusion may bring. A change of the model, of a default,
or of how JAX computes a kernel moves these outputs by orders of magnitude more and fails here.
"""

import importlib.util
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest

from chaosfm.predictor import SnapshotError, load_snapshot
from chaosfm.predictor._snapshot import FORMAT_VERSION

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "predictor_reference"
REGENERATE = (
    "If the change of results is intended (a new JAX, a predictor change), regenerate the reference with"
    " `.venv/bin/python tests/data/predictor_reference/make.py` and say so in the change."
)
RELATIVE = 1e-6
PRICE_UNITS = {"prediction", "kernel_predictions", "samples", "kernel_stds", "mixture_std"}


def _make():
    spec = importlib.util.spec_from_file_location("predictor_reference_make", REFERENCE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def expected():
    return json.loads((REFERENCE / "expected.json").read_text())


def test_reference_snapshot_predicts_as_when_it_was_made(expected):
    make = _make()
    try:
        snapshot = load_snapshot(REFERENCE / "snapshot.msgpack")
    except SnapshotError as error:
        pytest.fail(f"the reference snapshot no longer loads: {error}. {REGENERATE}")
    assert snapshot.config == make.CONFIG, f"the reference's config differs from make.py's. {REGENERATE}"
    assert expected["snapshot_format_version"] == FORMAT_VERSION == snapshot.format_version
    # The inputs are stored beside the outputs: the series' generator is checked too.
    np.testing.assert_array_equal(make.series()[make.OBSERVED :], np.asarray(expected["inputs"], np.float32))
    got = make.outputs_after(snapshot.state)
    level = float(np.max(np.abs(expected["inputs"])))
    for step, (want, have) in enumerate(zip(expected["outputs"], got, strict=True)):
        for name, value in want.items():
            where = f"step {step + 1} after the snapshot, output {name!r}"
            if isinstance(value, bool):
                assert have[name] == value, f"{where}: {have[name]} != {value}. {REGENERATE}"
                continue
            atol = RELATIVE * (level if name in PRICE_UNITS else 1.0)
            np.testing.assert_allclose(
                np.asarray(have[name]), np.asarray(value), rtol=RELATIVE, atol=atol, equal_nan=True,
                err_msg=f"{where} moved beyond the tolerance. {REGENERATE}",
            )


def test_reference_still_says_something(expected):
    # The reference must exercise the kernels: warm, kernels disagreeing, weights off uniform.
    outputs = expected["outputs"]
    assert all(row["warm"] for row in outputs)
    weights = np.asarray([row["weights"] for row in outputs])
    assert np.max(np.abs(weights - 0.25)) > 1e-3
    assert np.ptp(np.asarray(outputs[0]["kernel_predictions"])) > 0


def test_an_old_format_version_is_refused_naming_both_versions(tmp_path):
    document = msgpack.unpackb((REFERENCE / "snapshot.msgpack").read_bytes(), raw=False)
    old = tmp_path / "old.msgpack"
    old.write_bytes(msgpack.packb({**document, "format_version": FORMAT_VERSION - 1}, use_bin_type=True))
    with pytest.raises(
        SnapshotError, match=f"format version {FORMAT_VERSION - 1} found, version {FORMAT_VERSION} expected"
    ):
        load_snapshot(old)
