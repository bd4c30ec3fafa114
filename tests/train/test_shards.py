"""ArrayRecord shards read through Grain (``train/_shards.py``): records round-trip, the stream is the
in-memory sampler's batches (split per process), its state resumes, and a code model trained from
shards has the in-memory run's loss curve and, resumed mid-epoch, its final parameters."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError
from chaosfm.train import (
    BATCHES_FILE,
    CodeData,
    ShardSet,
    code_windows,
    fit_code_model,
    list_checkpoints,
    write_shards,
)
from tests.train._data import tiny_run_config


def _data() -> CodeData:
    """Two assets of random codes with an exogenous series (distinct, so a window names its origin)."""
    rng = np.random.default_rng(7)
    train = {"a": rng.integers(0, 10, 300).astype(np.int32), "b": rng.integers(0, 10, 200).astype(np.int32)}
    exo = {asset: rng.standard_normal(codes.size).astype(np.float32) for asset, codes in train.items()}
    return CodeData(train=train, vocab_size=10, exo_train=exo)


CONFIG = dict(steps=8, checkpoint_every=3, val_fraction=0.1)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The windows and held-out batch of the tiny config, and their shard folder (3 files)."""
    config = tiny_run_config(**CONFIG)
    sampler, heldout = code_windows(config, _data(), val_fraction=0.1, with_exo=True)
    folder = tmp_path_factory.mktemp("shards") / "windows"
    write_shards(folder, sampler, heldout, num_shards=3, fields={"seed": 3})
    return config, sampler, heldout, folder


def test_records_round_trip_to_the_source_windows(written):
    _, sampler, heldout, folder = written
    shards = ShardSet(folder)
    source = shards.source()
    assert len(source) == sampler.windows == shards.windows
    counts = [part["records"] for part in shards.index["shards"]]
    assert sum(counts) == sampler.windows and max(counts) - min(counts) <= 1  # even contiguous blocks
    from chaosfm.train import decode_window

    every = sampler.windows_at(np.arange(sampler.windows))
    for k in (0, 1, 158, 159, 300, sampler.windows - 1):
        record = decode_window(source[k], shards.index["layout"])
        for name in ("codes", "exo"):
            np.testing.assert_array_equal(record[name], every[name][k])
    back = shards.heldout(["codes", "exo"])
    for name in ("codes", "exo"):
        np.testing.assert_array_equal(back[name], heldout[name])


def test_the_stream_reads_the_in_memory_batches_with_and_without_prefetch(written):
    config, sampler, _, folder = written
    for threads, prefetch in ((0, 0), (2, 16)):
        stream = ShardSet(folder, read_threads=threads, prefetch=prefetch).stream(
            batch_size=4, seed=3, names=["codes"])
        for step in range(6):
            batch = stream(step)
            assert set(batch) == {"codes"}
            np.testing.assert_array_equal(batch["codes"], sampler(step)["codes"])
    with pytest.raises(ValueError, match="at step 6; step 9"):
        stream(9)


def test_processes_read_disjoint_blocks_that_cover_each_batch(written):
    _, sampler, _, folder = written
    shards = ShardSet(folder)
    streams = [shards.stream(batch_size=4, seed=3, names=["codes", "exo"], process_index=p, process_count=2)
               for p in range(2)]
    for step in range(5):
        first, second = (stream(step) for stream in streams)
        assert first["codes"].shape == second["codes"].shape == (2, sampler.window)
        for name in ("codes", "exo"):
            np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), sampler(step)[name])
    with pytest.raises(ValueError, match="do not split over 3 processes"):
        shards.stream(batch_size=4, seed=3, names=["codes"], process_index=0, process_count=3)


def test_a_restored_stream_continues_where_the_saved_one_was(written):
    _, sampler, _, folder = written
    shards = ShardSet(folder)
    first = shards.stream(batch_size=4, seed=3, names=["codes"])
    for step in range(3):
        first(step)
    state = json.loads(json.dumps(first.get_state()))  # what batches.json holds
    assert state["next_step"] == 3 and state["grain"]["last_seen_indices"] == {"0": 11}
    second = shards.stream(batch_size=4, seed=3, names=["codes"])
    second.set_state(state)
    np.testing.assert_array_equal(second(3)["codes"], first(3)["codes"])
    np.testing.assert_array_equal(second(4)["codes"], sampler(4)["codes"])
    with pytest.raises(ArtifactError, match="train.seed or train.batch_size"):
        shards.stream(batch_size=4, seed=4, names=["codes"]).set_state(state)
    with pytest.raises(ArtifactError, match="process 0 of 1, this is process 1 of 2"):
        shards.stream(batch_size=4, seed=3, names=["codes"], process_index=1, process_count=2).set_state(state)


def test_a_damaged_shard_is_named(written, tmp_path):
    import shutil

    _, _, _, folder = written
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / "windows-00001-of-00003.array_record"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="windows-00001-of-00003.array_record: damaged"):
        ShardSet(copy)


def _losses(run_dir):
    return [(entry["step"], entry["loss"], entry.get("val_loss"))
            for entry in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in entry]


def _leaves(model):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]


def test_training_from_shards_is_the_in_memory_run_and_resumes_mid_epoch(written, tmp_path):
    config, sampler, _, folder = written
    memory = fit_code_model(config, _data(), tmp_path / "memory", val_fraction=0.1)
    sharded = fit_code_model(config, None, tmp_path / "sharded", shards=ShardSet(folder))
    assert _losses(tmp_path / "memory") == _losses(tmp_path / "sharded")  # bit for bit, val_loss too
    assert len(_losses(tmp_path / "sharded")) == 8 and _losses(tmp_path / "sharded")[-1][2] is not None
    for a, b in zip(_leaves(memory.model), _leaves(sharded.model)):
        np.testing.assert_array_equal(a, b)

    # Stop after the checkpoint of step 6 (mid-epoch: 8 steps of 4 draw 32 of ~450 windows), resume.
    def stop(step, metrics):
        if step == 6:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        fit_code_model(config, None, tmp_path / "resumed", shards=ShardSet(folder), on_step=stop)
    saved = json.loads((list_checkpoints(tmp_path / "resumed")[-1] / BATCHES_FILE).read_text())
    assert saved["processes"][0]["next_step"] == 6
    resumed = fit_code_model(config, None, tmp_path / "resumed", shards=ShardSet(folder), resume=True)
    assert resumed.resumed_from == 6
    for a, b in zip(_leaves(sharded.model), _leaves(resumed.model)):
        np.testing.assert_array_equal(a, b)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "sharded")


def test_resuming_an_in_memory_checkpoint_from_shards_is_refused(written, tmp_path):
    config, _, _, folder = written
    short = tiny_run_config(**{**CONFIG, "steps": 3})
    fit_code_model(short, _data(), tmp_path / "run", val_fraction=0.1)
    with pytest.raises(ArtifactError, match="holds no batches.json"):
        fit_code_model(config, None, tmp_path / "run", shards=ShardSet(folder), resume=True)
