"""Snapshots: bit-exact round trip, damaged files refused with one clear error, resume in run_stream."""

import hashlib

import jax
import msgpack
import numpy as np
import pytest

from chaosfm.predictor import (
    SnapshotError,
    StreamProgress,
    init_predictor,
    load_snapshot,
    run_stream,
    save_snapshot,
)
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._snapshot import FORMAT_VERSION

from .test_stream import PREDICTOR, STREAM, _walk  # the shared compiled step


@pytest.fixture(scope="module")
def stepped():
    """A state 40 steps in (past warm-up: every cache, weight and CUSUM field is non-trivial)."""
    step = packed_step(PREDICTOR)
    values = _walk(41, seed=7)
    packed = step.pack(init_predictor(PREDICTOR, values[0], key=jax.random.key(3)))
    for v in values[1:]:
        out, packed = step(packed, np.float32(v))
    return step.unpack(packed), np.asarray(step.output(out).samples, np.float64)


def _progress(samples):
    return StreamProgress(
        line=41, timestamp="2020-02-10", steps=40, started=True, key=jax.random.key(5), previous_value=101.25,
        previous_samples=samples, last_prediction={"line": 41, "observed": 101.25, "warm": True, "timestamp": None},
    )


def _leaves(state):
    """(path, dtype, raw bytes) of every leaf, key data for keys: equality here is bit equality."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out.append((jax.tree_util.keystr(path), str(leaf.dtype), np.asarray(jax.random.key_data(leaf)).tobytes()))
        else:
            out.append((jax.tree_util.keystr(path), str(leaf.dtype), np.asarray(leaf).tobytes()))
    return out


def test_round_trip_is_bit_exact(stepped, tmp_path):
    state, samples = stepped
    path = save_snapshot(state, tmp_path / "s.msgpack", config=PREDICTOR, stream=_progress(samples))
    loaded = load_snapshot(path)
    assert loaded.config == PREDICTOR and loaded.format_version == FORMAT_VERSION
    assert _leaves(loaded.state) == _leaves(state)
    assert jax.random.key_impl(loaded.state.key) == jax.random.key_impl(state.key)
    assert {"jax", "jaxlib", "ott-jax", "signax", "chaosfm"} <= set(loaded.versions)
    stream = loaded.stream
    assert (stream.line, stream.timestamp, stream.steps, stream.started, stream.previous_value) == (
        41, "2020-02-10", 40, True, 101.25)
    np.testing.assert_array_equal(stream.previous_samples, samples)
    np.testing.assert_array_equal(jax.random.key_data(stream.key), jax.random.key_data(jax.random.key(5)))
    assert stream.last_prediction == {"line": 41, "observed": 101.25, "warm": True, "timestamp": None}
    # The restored state steps exactly like the original.
    step = packed_step(PREDICTOR)
    a, _ = step(step.pack(state), np.float32(102.0))
    b, _ = step(step.pack(loaded.state), np.float32(102.0))
    np.testing.assert_array_equal(np.asarray(a.floats), np.asarray(b.floats))


def test_truncated_and_bit_flipped_files_are_refused(stepped, tmp_path):
    state, samples = stepped
    path = save_snapshot(state, tmp_path / "s.msgpack", config=PREDICTOR, stream=_progress(samples))
    data = path.read_bytes()
    damaged = tmp_path / "damaged.msgpack"
    for length in (0, 1, 20, len(data) // 2, len(data) - 1):
        damaged.write_bytes(data[:length])
        with pytest.raises(SnapshotError, match="damaged|truncated|not a chaosfm") as caught:
            load_snapshot(damaged)
        assert str(damaged) in str(caught.value)
    # One flipped bit anywhere, header included (every 97th byte, plus the first and last 64).
    positions = sorted({*range(0, len(data), 97), *range(64), *range(len(data) - 64, len(data))})
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 1 << (position % 8)
        damaged.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotError) as caught:
            load_snapshot(damaged)
        assert str(damaged) in str(caught.value), position
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "missing.msgpack")


def _rewrite(path, document):
    path.write_bytes(msgpack.packb(document, use_bin_type=True))


def test_other_format_version_checksum_and_shapes_are_refused(stepped, tmp_path):
    state, _ = stepped
    path = save_snapshot(state, tmp_path / "s.msgpack", config=PREDICTOR)
    document = msgpack.unpackb(path.read_bytes(), raw=False)
    _rewrite(path, {**document, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(SnapshotError, match=f"format version {FORMAT_VERSION + 1}"):
        load_snapshot(path)

    payload = msgpack.unpackb(document["payload"], raw=False)
    payload["state"][0]["data"] = b"\x07\x00\x00\x00"  # count = 7 instead of the real one, old checksum
    body = msgpack.packb(payload, use_bin_type=True)
    _rewrite(path, {**document, "payload": body})
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        load_snapshot(path)

    # Well-formed and checksummed, but the state is not of the stored config: a buffer of 64.
    payload = msgpack.unpackb(document["payload"], raw=False)
    payload["config"]["buffer_size"] = 64
    body = msgpack.packb(payload, use_bin_type=True)
    _rewrite(path, {**document, "payload": body, "sha256": hashlib.sha256(body).hexdigest()})
    with pytest.raises(SnapshotError, match=r"leaf \.levels: float32\[128\], expected float32\[64\]"):
        load_snapshot(path)

    # A leaf of a dtype a snapshot never holds is refused before numpy interprets it.
    payload = msgpack.unpackb(document["payload"], raw=False)
    payload["state"][1]["dtype"] = "object"
    body = msgpack.packb(payload, use_bin_type=True)
    _rewrite(path, {**document, "payload": body, "sha256": hashlib.sha256(body).hexdigest()})
    with pytest.raises(SnapshotError, match="dtype 'object'"):
        load_snapshot(path)


def test_stream_snapshots_on_cadence_and_refuses_a_damaged_restore(tmp_path):
    snapshot = tmp_path / "s.msgpack"
    config = STREAM.model_copy(update={"snapshot": snapshot, "snapshot_every": 10})
    metrics = run_stream(config, series=_walk(36)).metrics
    assert metrics["snapshots_written"] == 3 + 1  # steps 10, 20, 30 and the end (35 steps)
    assert load_snapshot(snapshot).stream.steps == 35
    data = snapshot.read_bytes()
    snapshot.write_bytes(data[: len(data) - 10])
    rows = []
    with pytest.raises(SnapshotError, match="s.msgpack"):
        run_stream(STREAM.model_copy(update={"restore": snapshot}), series=_walk(50), on_prediction=rows.append)
    assert rows == []  # nothing ran from a damaged file


def test_restore_with_another_config_names_the_keys(tmp_path):
    snapshot = tmp_path / "s.msgpack"
    run_stream(STREAM.model_copy(update={"snapshot": snapshot}), series=_walk(12))
    other = STREAM.model_copy(update={"restore": snapshot, "predictor": PREDICTOR.model_copy(update={"num_samples": 32})})
    with pytest.raises(SnapshotError, match="predictor.num_samples: snapshot 64, this run 32"):
        run_stream(other, series=_walk(20))
