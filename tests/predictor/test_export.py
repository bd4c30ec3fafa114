"""Exported programs on disk: round trip, damaged files ignored and rewritten, keys, no code loaded.

Tiny programs here (the predictor's own are tested in test_packed_step.py): the mechanism does
not depend on what is exported.
"""

import hashlib
import os
import pickle

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest

from chaosfm.predictor import PredictorConfig
from chaosfm.predictor._export import (
    FORMAT_VERSION,
    ExportCache,
    export_key,
    program,
    trace_context,
)

CONFIG = PredictorConfig()
SPECS = (jax.ShapeDtypeStruct((5,), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32))


def _function(floats, ints):
    # Something XLA could reorder if it wanted to: a reduction, a transcendental, a cast.
    scale = jnp.sum(jnp.sin(floats) * jnp.arange(1.0, 6.0))
    return floats * scale + ints.astype(jnp.float32).mean(), ints * 3 - 1


def _arguments(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(5).astype(np.float32), rng.integers(-9, 9, 3).astype(np.int32)


def _program(cache, **options):
    return program("tiny", _function, lambda: SPECS, config=CONFIG, cache=cache, aux=lambda: {"rows": [1, 2]},
                   **options)


def _bits(outputs):
    return [np.asarray(x).tobytes() for x in outputs]


def test_round_trip_computes_what_the_traced_function_does(tmp_path):
    cache = ExportCache(tmp_path)
    written = _program(cache)
    assert written.status == "exported" and written.aux == {"rows": [1, 2]}
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["tiny"]
    loaded = _program(cache)  # a fresh load, as a restarted process does
    assert loaded.status == "loaded" and loaded.aux == {"rows": [1, 2]}
    assert loaded.specs == SPECS  # read off the file, not passed in
    reference = jax.jit(_function)
    for seed in range(3):
        arguments = _arguments(seed)
        assert _bits(loaded.function(*arguments)) == _bits(reference(*arguments))
        assert _bits(written.function(*arguments)) == _bits(reference(*arguments))
    traced = _program(None)
    assert traced.status == "traced" and traced.specs == SPECS


def _rewrite(path, document):
    path.write_bytes(msgpack.packb(document, use_bin_type=True))


def test_damaged_or_mismatched_files_are_ignored_and_rewritten(tmp_path):
    cache = ExportCache(tmp_path)
    _program(cache)
    (path,) = tmp_path.iterdir()
    good = path.read_bytes()
    document = msgpack.unpackb(good, raw=False)
    payload = bytearray(document["payload"])
    payload[len(payload) // 2] ^= 0x10
    damaged = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not msgpack": b"\xc1" * 64,
        "bit flipped in the module": msgpack.packb({**document, "payload": bytes(payload)}, use_bin_type=True),
        "other format version": msgpack.packb({**document, "format_version": FORMAT_VERSION + 1}, use_bin_type=True),
        "other key": msgpack.packb({**document, "key": "0" * 64}, use_bin_type=True),
        "not a document": msgpack.packb([1, 2, 3]),
    }
    # Checksummed, but not a serialised program (another jax's, say): unusable, never half-built.
    body = msgpack.unpackb(document["payload"], raw=False)
    body["exported"] = body["exported"][: len(body["exported"]) // 3]
    packed = msgpack.packb(body, use_bin_type=True)
    damaged["not a program"] = msgpack.packb(
        {**document, "payload": packed, "sha256": hashlib.sha256(packed).hexdigest()}, use_bin_type=True)
    for what, data in damaged.items():
        path.write_bytes(data)
        assert cache.load("tiny", document["key"]) is None, what
        made = _program(cache)  # traced again and the file rewritten
        assert made.status == "exported", what
        assert _bits(made.function(*_arguments())) == _bits(jax.jit(_function)(*_arguments())), what
        assert path.read_bytes() == good, what
        assert _program(cache).status == "loaded", what


def test_a_file_never_runs_code(tmp_path):
    """A pickle (or msgpack ext) where the payload belongs is data that fails the checks, not code."""
    marker = tmp_path / "ran"

    class Trap:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    cache = ExportCache(tmp_path / "cache")
    _program(cache)
    (path,) = (tmp_path / "cache").iterdir()
    document = msgpack.unpackb(path.read_bytes(), raw=False)
    trap = pickle.dumps(Trap())
    for payload in (trap, msgpack.packb(msgpack.ExtType(1, trap))):
        _rewrite(path, {**document, "payload": payload, "sha256": hashlib.sha256(payload).hexdigest()})
        assert cache.load("tiny", document["key"]) is None
    assert not marker.exists()


def test_nested_results_keep_their_structure(tmp_path):
    def nested(x):
        return x * 2.0, (x + 1.0,)

    def make():
        return program("nested", nested, lambda: (jax.ShapeDtypeStruct((2,), jnp.float32),),
                       config=CONFIG, cache=ExportCache(tmp_path))

    assert make().status == "exported"
    made = make()
    assert made.status == "loaded"
    doubled, (plus_one,) = made.function(np.ones(2, np.float32))
    np.testing.assert_array_equal(doubled, [2.0, 2.0])
    np.testing.assert_array_equal(plus_one, [2.0, 2.0])


def test_a_read_only_cache_is_not_an_error(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    made = _program(ExportCache(blocked / "exports"))
    assert made.status == "exported"
    assert _bits(made.function(*_arguments())) == _bits(jax.jit(_function)(*_arguments()))


def test_key_changes_with_everything_that_changes_the_trace(monkeypatch):
    base = export_key("step", CONFIG)
    assert export_key("step", PredictorConfig()) == base  # equal configs, equal keys
    assert export_key("init", CONFIG) != base
    assert export_key("step", PredictorConfig(dgm={"width": 8})) != base
    assert export_key("step", PredictorConfig(cusum={"slack": 0.25})) != base
    assert export_key("step", CONFIG, extra={"key": "rbg"}) != base
    with jax.default_matmul_precision("highest"):  # deterministic mode traces at "highest"
        assert trace_context()["matmul_precision"] == "highest"
        assert export_key("step", CONFIG) != base
    with jax.threefry_partitionable(not jax.config.jax_threefry_partitionable):
        assert export_key("step", CONFIG) != base
    assert export_key("step", CONFIG, context={**trace_context(), "x64": True}) != base
    from chaosfm.predictor import _export

    monkeypatch.setattr(_export, "_source_digest", lambda: "edited")
    assert export_key("step", CONFIG) != base
    monkeypatch.setattr(_export, "_versions", lambda: (("jax", "0.0.1"),))
    assert export_key("step", CONFIG) != base


def test_source_digest_covers_every_predictor_module():
    from chaosfm.predictor import _export

    digest = hashlib.sha256()
    folder = _export.Path(_export.__file__).parent
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    assert _export._source_digest() == digest.hexdigest()
    assert {"_predictor.py", "_packed_step.py", "_orchestrator.py"} <= {p.name for p in folder.glob("*.py")}


@pytest.mark.parametrize("donate", [False, True])
def test_jit_options_apply_to_the_loaded_program(tmp_path, donate):
    cache = ExportCache(tmp_path)
    options = {"donate_argnums": (0,)} if donate else {}
    _program(cache, **options)
    loaded = _program(cache, **options)
    floats, ints = (jnp.asarray(a) for a in _arguments())
    loaded.function(floats, ints)
    assert floats.is_deleted() == donate
