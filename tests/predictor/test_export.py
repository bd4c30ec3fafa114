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
from chaosfm.predictor._cache import CONFIG_DIR_ENV, cache_secret
from chaosfm.predictor._export import (
    ALLOWED_CUSTOM_CALLS,
    FORMAT,
    FORMAT_VERSION,
    ExportCache,
    custom_call_targets,
    export_key,
    program,
    refusal,
    trace_context,
)

CONFIG = PredictorConfig()
SPECS = (jax.ShapeDtypeStruct((5,), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32))
CALLBACKS = ("xla_ffi_python_cpu_callback", "xla_python_cpu_callback", "xla_ffi_partitioned_python_cpu_callback")


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    """The export key lives in a temporary config folder, never the user's."""
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path_factory.mktemp("config") / "chaosfm"))


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


def _planted(function, name="tiny"):
    """A document for ``function`` (same signature as the tiny program) with a valid sha256."""
    exported = jax.export.export(jax.jit(function))(*SPECS)
    payload = msgpack.packb({"exported": bytes(exported.serialize()), "aux": {"rows": [1, 2]}}, use_bin_type=True)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "key": export_key(name, CONFIG),
            "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}


def _forty_two(floats, ints):
    return jnp.full((5,), 42.0, jnp.float32), jnp.full((3,), 42, jnp.int32)


@pytest.mark.parametrize("tag", ["none", "another secret", "a sha256", "this secret, other payload"])
def test_a_planted_export_without_this_users_hmac_is_not_loaded(tmp_path, tag, monkeypatch, capsys):
    """Another local user can compute any sha256 and any file name but not the HMAC: a planted
    program that makes every output 42 is ignored, the real one traced and written over it."""
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    from chaosfm.predictor._export import _tag

    cache = ExportCache(tmp_path)
    secret = cache_secret()
    document = _planted(_forty_two)
    if tag == "another secret":  # the attacker's own key
        document["hmac"] = _tag(b"k" * 32, "tiny", document["key"], document["payload"])
    elif tag == "a sha256":
        document["hmac"] = document["sha256"]
    elif tag == "this secret, other payload":  # a genuine tag moved onto another program
        document["hmac"] = _tag(secret, "tiny", document["key"], _planted(_function)["payload"])
    # The strongest attacker: one who even knows the file name this user's runs read.
    path = cache.path("tiny", document["key"], secret)
    _rewrite(path, document)
    assert cache.load("tiny", document["key"]) is None
    made = _program(cache)
    assert made.status == "exported"  # traced again, not loaded
    reference = jax.jit(_function)(*_arguments())
    outputs = made.function(*_arguments())
    assert _bits(outputs) == _bits(reference)
    assert not np.any(np.asarray(outputs[0]) == 42.0)
    assert _program(cache).status == "loaded"  # the rewritten file is this user's and verifies
    said = capsys.readouterr().err
    assert "HMAC does not verify" in said and str(path) in said


def test_file_names_depend_on_the_secret(tmp_path):
    key = export_key("tiny", CONFIG)
    mine, theirs = ExportCache(tmp_path, secret=b"a" * 32), ExportCache(tmp_path, secret=b"b" * 32)
    assert mine.path("tiny", key, b"a" * 32) != theirs.path("tiny", key, b"b" * 32)
    assert key[:40] not in mine.path("tiny", key, b"a" * 32).name  # not guessable from the key alone


def _python_callback(floats, ints):
    # What a planted program would call: the host-callback target, with a pointer of its choosing.
    out = jax.ffi.ffi_call("xla_ffi_python_cpu_callback", jax.ShapeDtypeStruct(floats.shape, floats.dtype))(floats)
    return out, ints


def test_an_export_calling_a_python_callback_is_refused_even_if_signed(tmp_path, monkeypatch, capsys):
    """The HMAC aside (a leaked key, a copied cache), a program naming a custom call the predictor
    does not use is never run from a file: it would crash (rc 139) or run code."""
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    from chaosfm.predictor._export import _tag

    exported = jax.export.export(
        jax.jit(_python_callback),
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("xla_ffi_python_cpu_callback")],
    )(*SPECS)
    assert "xla_ffi_python_cpu_callback" in custom_call_targets(exported)
    assert "xla_ffi_python_cpu_callback" in refusal(exported)
    cache = ExportCache(tmp_path)
    secret = cache_secret()
    key = export_key("tiny", CONFIG)
    assert cache.save("tiny", key, exported, {"rows": [1, 2]}) is None  # not written either
    assert list(tmp_path.iterdir()) == []
    payload = msgpack.packb({"exported": bytes(exported.serialize()), "aux": {"rows": [1, 2]}}, use_bin_type=True)
    path = cache.path("tiny", key, secret)
    _rewrite(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "name": "tiny", "key": key,
                    "sha256": hashlib.sha256(payload).hexdigest(), "hmac": _tag(secret, "tiny", key, payload),
                    "payload": payload})
    assert cache.load("tiny", key) is None
    made = _program(cache)
    assert made.status == "exported"
    assert _bits(made.function(*_arguments())) == _bits(jax.jit(_function)(*_arguments()))
    said = capsys.readouterr().err
    assert "refused" in said and "xla_ffi_python_cpu_callback" in said


def test_custom_call_targets_are_read_from_the_module():
    exported = jax.export.export(jax.jit(lambda m: jnp.linalg.cholesky(m)))(jax.ShapeDtypeStruct((3, 3), jnp.float32))
    targets = custom_call_targets(exported)
    assert targets and all(t.startswith("lapack_") for t in targets)  # LAPACK's potrf on CPU
    assert refusal(exported) is not None  # the predictor does not use it: not loaded
    assert custom_call_targets(jax.export.export(jax.jit(_function))(*SPECS)) == set()
    assert not set(CALLBACKS) & ALLOWED_CUSTOM_CALLS


def test_an_export_folder_others_can_write_is_not_read(tmp_path):
    cache = ExportCache(tmp_path / "exports")
    assert _program(cache).status == "exported"
    assert os.stat(tmp_path / "exports").st_mode & 0o777 == 0o700
    assert _program(cache).status == "loaded"
    os.chmod(tmp_path / "exports", 0o777)  # anyone could have replaced the file since
    assert _program(cache).status == "exported"  # traced; nothing read (or written) there


def test_a_key_that_is_not_private_turns_exports_off(tmp_path):
    cache_secret()
    from chaosfm.predictor._cache import key_path

    os.chmod(key_path(), 0o644)
    cache = ExportCache(tmp_path / "exports")
    assert _program(cache).status == "exported"
    assert not (tmp_path / "exports").exists()  # nothing written under a key others can read


@pytest.mark.slow  # exports the predictor's real programs: the step and the warm start compile (~40 s on 2 cores)
def test_the_predictors_own_programs_need_no_custom_call_outside_the_allow_list(tmp_path):
    """The allow-list, measured: every target the real init, step and warm start name is on it (on
    CPU there are none), so a genuine file always loads, and no callback target is."""
    from chaosfm.predictor._packed_step import PackedStep

    step = PackedStep(PredictorConfig(), export_dir=tmp_path / "exports")
    key = jax.random.key(3)
    state = step.init(np.float32(100.0), key)
    step(state, np.float32(101.0))
    step.compile_warm_start(key)
    assert step.status == {"init": "exported", "step": "exported", "warm_start": "exported"}
    cache = ExportCache(tmp_path / "exports")
    used = set()
    for path in sorted((tmp_path / "exports").iterdir()):
        document = msgpack.unpackb(path.read_bytes(), raw=False)
        stored = cache.load(document["name"], document["key"])
        assert stored is not None, path  # passed the HMAC and the refusal checks
        assert refusal(stored.exported) is None
        used |= custom_call_targets(stored.exported)
    assert used <= ALLOWED_CUSTOM_CALLS
    assert not set(CALLBACKS) & ALLOWED_CUSTOM_CALLS
